/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sandtrail file collection, included at the end of process.bpf.c (one object: the file
 * programs share its ring buffer, cgroup filter, header and loss counters).
 *
 * Each traced call makes two records: at sys_enter, REC_FILE_ARGS with the path argument(s)
 * read from user memory (bpf_probe_read_user_str) while they are the call's arguments, the
 * dirfd(s), flags and mode; at sys_exit, a small REC_FILE_RET with the result (fd, 0 or
 * -errno; no header, 24 bytes). User space joins the two by thread id (as it joins exec
 * arguments). Only threads whose entry was recorded (the file_calls map, by tid, defined in
 * process.bpf.c) make an exit record, so the exit programs cost one hash lookup for everyone
 * else.
 *
 * Opens (open, openat: most of the calls) are recorded at their exit alone instead, where the
 * kernel allows it: one REC_FILE_CALL, the entry record with the result (call_open[at] below).
 *
 * Every call is sent, read-only opens included: the read policy (sensitive paths logged,
 * others summarized with a count) is the collector's, configurable in user space and applied to
 * absolute paths the kernel side cannot build without kernel reads.
 *
 * Syscall tracepoint contexts: 8 bytes of common fields, the syscall number, then every
 * argument as an 8-byte slot from offset 16 (the argument order of each call is in a comment).
 */

#define REC_FILE_ARGS 8
#define REC_FILE_RET 9
#define REC_FILE_RET_PATHS 10
#define REC_FILE_CALL 11

/* rec_file_args.op */
#define FOP_OPEN 1
#define FOP_UNLINK 2
#define FOP_RMDIR 3
#define FOP_RENAME 4
#define FOP_MKDIR 5
#define FOP_CHDIR 6
#define FOP_FCHDIR 7
#define FOP_CHMOD 8
#define FOP_CHOWN 9
#define FOP_LINK 10
#define FOP_SYMLINK 11
#define FOP_TRUNCATE 12
#define FOP_FTRUNCATE 13
#define FOP_MOUNT 14
#define FOP_UMOUNT 15
#define FOP_DUP 16
#define FOP_MKNOD 17

/* rec_file_args.rflags */
#define FILE_PATH_FAULT 1  /* the path could not be read from user memory */
#define FILE_PATH2_FAULT 2 /* the second path could not be read */
#define FILE_BY_FD 4       /* the call names its file by an fd (rec.fd), not a path */

#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define FILE_PATH_MAX 4096
#define FSTYPE_MAX 32

#define O_WRONLY 01
#define O_CREAT 0100
#define O_TRUNC 01000

/* Loss slot: the table of file calls in progress was full (their results are lost). */
#define LOSS_FILE_MAP_FULL LOSS_FILE_MAP_FULL_SLOT

struct tp_sys_enter {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__u64 args[6];
};

struct rec_file_args {
	struct rec_hdr h;
	__u32 op;     /* FOP_* */
	__u32 rflags; /* FILE_PATH*_FAULT */
	__s32 dirfd;  /* of path; AT_FDCWD when the call has none */
	__s32 dirfd2; /* of path2 */
	__u64 flags;  /* open O_* (openat2: how.flags), unlinkat/linkat/fchownat/renameat2 flags, mount MS_*, mknod dev */
	__u32 mode;   /* open/mkdir/chmod mode; mknod: with the file type bits */
	__u32 uid;    /* chown */
	__u32 gid;
	__s32 fd;     /* fchdir, ftruncate, fchmod, fchown, dup*: the fd; -1 otherwise */
	__s64 length; /* truncate, ftruncate */
	__u32 path_len;  /* bytes of path[] (NUL included); 0 on a fault */
	__u32 path2_len; /* bytes of path2[] (NUL included); 0 when none */
	char fstype[FSTYPE_MAX]; /* mount */
	__s64 ret;    /* REC_FILE_CALL only: the call's result (fd, 0 or -errno) */
	char path[FILE_PATH_MAX];
	char path2[FILE_PATH_MAX]; /* rename/link: the new name; symlink: the link; mount: the source */
};

#define FILE_FIXED (sizeof(struct rec_file_args) - 2 * FILE_PATH_MAX)

/* The result of a call: no rec_hdr (the entry record has the task; the thread id joins the
 * two), which spares the exit the header's helper calls and 48 bytes of ring. */
struct rec_file_ret {
	__u32 kind; /* REC_FILE_RET */
	__u32 tid;
	__u32 op;
	__u32 pad;
	__s64 ret; /* the syscall's return value: fd, 0, or -errno */
};

/* The exit of a call whose path could not be read at entry (a string in a page not yet
 * faulted in: bpf_probe_read_user cannot fault pages in). By the exit the kernel has read the
 * string itself (faulting the page in), so it is read again then. */
struct rec_file_ret_paths {
	struct rec_hdr h;
	__u32 op;
	__u32 rflags; /* FILE_PATH*_FAULT: still unreadable at exit */
	__s64 ret;
	__u32 path_len;  /* 0 when not re-read or still unreadable */
	__u32 path2_len;
	char path[FILE_PATH_MAX];
	char path2[FILE_PATH_MAX];
};

#define FILE_RET_PATHS_FIXED (sizeof(struct rec_file_ret_paths) - 2 * FILE_PATH_MAX)


struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rec_file_ret_paths);
} file_ret_scratch SEC(".maps");

/* One file record under construction per CPU (too large for the stack). Tracepoint programs
 * do not nest on a CPU and run with preemption disabled (see `scratch`). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rec_file_args);
} file_scratch SEC(".maps");


/* The user pointers of the path arguments of the call being built on this CPU, written only
 * when the entry read faults (for a re-read at exit) and read only for the path(s) that did. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct file_call);
} file_ptrs SEC(".maps");

static __always_inline struct rec_file_args *file_begin(__u32 op)
{
	__u64 cgroup_id = watched_cgroup();
	if (!cgroup_id)
		return 0;
	__u32 zero = 0;
	struct rec_file_args *r = bpf_map_lookup_elem(&file_scratch, &zero);
	if (!r) {
		count_loss(LOSS_SCRATCH);
		return 0;
	}
	fill_file_hdr(&r->h, REC_FILE_ARGS, cgroup_id);
	r->op = op;
	r->rflags = 0;
	r->dirfd = AT_FDCWD;
	r->dirfd2 = AT_FDCWD;
	r->flags = 0;
	r->mode = 0;
	r->uid = 0;
	r->gid = 0;
	r->fd = -1;
	r->length = 0;
	r->path_len = 0;
	r->path2_len = 0;
	r->fstype[0] = 0;
	/* path[] and path2[] are read only up to path_len / path2_len (0 unless read here). */
	return r;
}

static __always_inline void file_keep_ptr(__u64 ptr, int second)
{
	__u32 zero = 0;
	struct file_call *c = bpf_map_lookup_elem(&file_ptrs, &zero);
	if (!c)
		return;
	if (second)
		c->ptr2 = ptr;
	else
		c->ptr = ptr;
}

/* Reads the path argument at `ptr`; 0 when it could not be read (FILE_PATH_FAULT set). */
static __always_inline int read_path(struct rec_file_args *r, __u64 ptr)
{
	long n = bpf_probe_read_user_str(r->path, sizeof(r->path), (const void *)ptr);
	if (n > 0) {
		r->path_len = n;
		return 1;
	}
	r->path_len = 0;
	r->rflags |= FILE_PATH_FAULT;
	return 0;
}

/* At entry: a path that could not be read is read again at the exit. */
static __always_inline void file_path(struct rec_file_args *r, __u64 ptr)
{
	if (!read_path(r, ptr))
		file_keep_ptr(ptr, 0);
}

static __always_inline void file_path2(struct rec_file_args *r, __u64 ptr)
{
	long n = bpf_probe_read_user_str(r->path2, sizeof(r->path2), (const void *)ptr);
	if (n > 0) {
		r->path2_len = n;
	} else {
		r->path2_len = 0;
		r->rflags |= FILE_PATH2_FAULT;
		file_keep_ptr(ptr, 1);
	}
}

/* The bytes of `r` to send: up to the end of its last path. */
static __always_inline __u64 file_size(struct rec_file_args *r)
{
	__u64 size;
	__u32 len2 = r->path2_len;
	__u32 len1 = r->path_len;
	if (len2 || (r->rflags & FILE_PATH2_FAULT)) {
		if (len2 > FILE_PATH_MAX)
			len2 = FILE_PATH_MAX;
		size = FILE_FIXED + FILE_PATH_MAX + len2;
	} else {
		if (len1 > FILE_PATH_MAX)
			len1 = FILE_PATH_MAX;
		size = FILE_FIXED + len1;
	}
	if (size > sizeof(*r))
		size = sizeof(*r);
	return size;
}

/* Sends the entry record at its real length and remembers the call for its exit. */
static __always_inline int file_send(struct rec_file_args *r)
{
	__u64 size = file_size(r);
	__u32 tid = r->h.pid;
	struct file_call call = {.op = r->op, .faulted = r->rflags & (FILE_PATH_FAULT | FILE_PATH2_FAULT)};
	if (call.faulted) {
		__u32 zero = 0;
		struct file_call *c = bpf_map_lookup_elem(&file_ptrs, &zero);
		if (c) {
			call.ptr = c->ptr;
			call.ptr2 = c->ptr2;
		}
	}
	if (bpf_ringbuf_output(&events, r, size, rb_wakeup())) {
		count_loss(LOSS_RINGBUF);
		return 0;
	}
	/* The thread's entry stays in the map between its calls (op 0 when none is in progress;
	 * removed when the thread exits): written in place, no insert and delete per call. Only
	 * the thread itself writes its entry. */
	struct file_call *slot = bpf_map_lookup_elem(&file_calls, &tid);
	if (slot)
		*slot = call;
	else if (bpf_map_update_elem(&file_calls, &tid, &call, BPF_NOEXIST))
		count_loss(LOSS_FILE_MAP_FULL);
	return 0;
}

/* The exit of a call whose path(s) faulted at entry: the result and the paths read again. */
static __always_inline int file_exit_paths(struct tp_sys_exit *ctx, struct file_call *call)
{
	__u32 zero = 0;
	struct rec_file_ret_paths *r = bpf_map_lookup_elem(&file_ret_scratch, &zero);
	if (!r) {
		count_loss(LOSS_SCRATCH);
		return 0;
	}
	fill_hdr(&r->h, REC_FILE_RET_PATHS);
	r->op = call->op;
	r->rflags = 0;
	r->ret = ctx->ret;
	r->path_len = 0;
	r->path2_len = 0;
	if (call->faulted & FILE_PATH_FAULT) {
		long n = bpf_probe_read_user_str(r->path, sizeof(r->path), (const void *)call->ptr);
		if (n > 0)
			r->path_len = n;
		else
			r->rflags |= FILE_PATH_FAULT;
	}
	if (call->faulted & FILE_PATH2_FAULT) {
		long n = bpf_probe_read_user_str(r->path2, sizeof(r->path2), (const void *)call->ptr2);
		if (n > 0)
			r->path2_len = n;
		else
			r->rflags |= FILE_PATH2_FAULT;
	}
	__u64 size;
	__u32 len2 = r->path2_len;
	__u32 len1 = r->path_len;
	if (len2) {
		if (len2 > FILE_PATH_MAX)
			len2 = FILE_PATH_MAX;
		size = FILE_RET_PATHS_FIXED + FILE_PATH_MAX + len2;
	} else {
		if (len1 > FILE_PATH_MAX)
			len1 = FILE_PATH_MAX;
		size = FILE_RET_PATHS_FIXED + len1;
	}
	if (size > sizeof(*r))
		size = sizeof(*r);
	if (bpf_ringbuf_output(&events, r, size, rb_wakeup()))
		count_loss(LOSS_RINGBUF);
	return 0;
}

static __always_inline int file_exit(struct tp_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct file_call *c = bpf_map_lookup_elem(&file_calls, &tid);
	if (!c || !c->op)
		return 0;
	struct file_call call = *c;
	c->op = 0;
	if (call.faulted)
		return file_exit_paths(ctx, &call);
	struct rec_file_ret *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_loss(LOSS_RINGBUF);
		return 0;
	}
	r->kind = REC_FILE_RET;
	r->tid = tid;
	r->op = call.op;
	r->pad = 0;
	r->ret = ctx->ret;
	bpf_ringbuf_submit(r, rb_wakeup());
	return 0;
}

#define FILE_EXIT(name)                                   \
	SEC("tracepoint/syscalls/sys_exit_" #name)        \
	int exit_##name(struct tp_sys_exit *ctx)          \
	{                                                 \
		return file_exit(ctx);                    \
	}

/* ---------------------------------------------------------------- opens */

/* open(filename, flags, mode) */
SEC("tracepoint/syscalls/sys_enter_open")
int enter_open(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_OPEN);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	r->flags = (__u32)ctx->args[1];
	r->mode = (__u32)ctx->args[2];
	return file_send(r);
}
FILE_EXIT(open)

/* creat(pathname, mode) = open(pathname, O_CREAT|O_WRONLY|O_TRUNC, mode) */
SEC("tracepoint/syscalls/sys_enter_creat")
int enter_creat(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_OPEN);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	r->flags = O_CREAT | O_WRONLY | O_TRUNC;
	r->mode = (__u32)ctx->args[1];
	return file_send(r);
}
FILE_EXIT(creat)

/* openat(dfd, filename, flags, mode) */
SEC("tracepoint/syscalls/sys_enter_openat")
int enter_openat(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_OPEN);
	if (!r)
		return 0;
	r->dirfd = (__s32)ctx->args[0];
	file_path(r, ctx->args[1]);
	r->flags = (__u32)ctx->args[2];
	r->mode = (__u32)ctx->args[3];
	return file_send(r);
}
FILE_EXIT(openat)

/* openat2(dfd, filename, how, usize); struct open_how { u64 flags; u64 mode; u64 resolve; } */
SEC("tracepoint/syscalls/sys_enter_openat2")
int enter_openat2(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_OPEN);
	if (!r)
		return 0;
	r->dirfd = (__s32)ctx->args[0];
	file_path(r, ctx->args[1]);
	__u64 how[2] = {};
	if (bpf_probe_read_user(how, sizeof(how), (const void *)ctx->args[2]) == 0) {
		r->flags = how[0];
		r->mode = (__u32)how[1];
	}
	return file_send(r);
}
FILE_EXIT(openat2)

/* The x86-64 user registers of a system call, reduced to its argument registers; relocated
 * against the running kernel's BTF (CO-RE). */
struct pt_regs {
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long r10;
} __attribute__((preserve_access_index));

/* An open recorded at its exit alone, as one REC_FILE_CALL (the entry record and the result in
 * one): the arguments come from the registers saved at the call's entry (bpf_task_pt_regs,
 * which the call does not change), the path from user memory, which the kernel has just read
 * (so the page is present). Half the work of an enter/exit pair: one program run, one record,
 * no file_calls entry. The loader attaches these where the kernel accepts them (5.15+, kernel
 * BTF) and the enter_/exit_ pairs above otherwise. */
static __always_inline int file_call_send(struct rec_file_args *r, __s64 ret)
{
	r->h.kind = REC_FILE_CALL;
	r->ret = ret;
	if (bpf_ringbuf_output(&events, r, file_size(r), rb_wakeup()))
		count_loss(LOSS_RINGBUF);
	return 0;
}

/* open(filename, flags, mode) at its exit */
SEC("tracepoint/syscalls/sys_exit_open")
int call_open(struct tp_sys_exit *ctx)
{
	struct rec_file_args *r = file_begin(FOP_OPEN);
	if (!r)
		return 0;
	struct pt_regs *regs = bpf_task_pt_regs(bpf_get_current_task_btf());
	read_path(r, regs->di);
	r->flags = (__u32)regs->si;
	r->mode = (__u32)regs->dx;
	return file_call_send(r, ctx->ret);
}

/* openat(dfd, filename, flags, mode) at its exit */
SEC("tracepoint/syscalls/sys_exit_openat")
int call_openat(struct tp_sys_exit *ctx)
{
	struct rec_file_args *r = file_begin(FOP_OPEN);
	if (!r)
		return 0;
	struct pt_regs *regs = bpf_task_pt_regs(bpf_get_current_task_btf());
	r->dirfd = (__s32)regs->di;
	read_path(r, regs->si);
	r->flags = (__u32)regs->dx;
	r->mode = (__u32)regs->r10;
	return file_call_send(r, ctx->ret);
}

/* ---------------------------------------------------------------- deletes */

/* unlink(pathname) */
SEC("tracepoint/syscalls/sys_enter_unlink")
int enter_unlink(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_UNLINK);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	return file_send(r);
}
FILE_EXIT(unlink)

/* unlinkat(dfd, pathname, flag); AT_REMOVEDIR makes it an rmdir */
SEC("tracepoint/syscalls/sys_enter_unlinkat")
int enter_unlinkat(struct tp_sys_enter *ctx)
{
	__u32 flag = (__u32)ctx->args[2];
	struct rec_file_args *r = file_begin(flag & AT_REMOVEDIR ? FOP_RMDIR : FOP_UNLINK);
	if (!r)
		return 0;
	r->dirfd = (__s32)ctx->args[0];
	file_path(r, ctx->args[1]);
	r->flags = flag;
	return file_send(r);
}
FILE_EXIT(unlinkat)

/* rmdir(pathname) */
SEC("tracepoint/syscalls/sys_enter_rmdir")
int enter_rmdir(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_RMDIR);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	return file_send(r);
}
FILE_EXIT(rmdir)

/* ---------------------------------------------------------------- renames */

/* rename(oldname, newname) */
SEC("tracepoint/syscalls/sys_enter_rename")
int enter_rename(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_RENAME);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	file_path2(r, ctx->args[1]);
	return file_send(r);
}
FILE_EXIT(rename)

/* renameat(olddfd, oldname, newdfd, newname) */
SEC("tracepoint/syscalls/sys_enter_renameat")
int enter_renameat(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_RENAME);
	if (!r)
		return 0;
	r->dirfd = (__s32)ctx->args[0];
	file_path(r, ctx->args[1]);
	r->dirfd2 = (__s32)ctx->args[2];
	file_path2(r, ctx->args[3]);
	return file_send(r);
}
FILE_EXIT(renameat)

/* renameat2(olddfd, oldname, newdfd, newname, flags) */
SEC("tracepoint/syscalls/sys_enter_renameat2")
int enter_renameat2(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_RENAME);
	if (!r)
		return 0;
	r->dirfd = (__s32)ctx->args[0];
	file_path(r, ctx->args[1]);
	r->dirfd2 = (__s32)ctx->args[2];
	file_path2(r, ctx->args[3]);
	r->flags = (__u32)ctx->args[4];
	return file_send(r);
}
FILE_EXIT(renameat2)

/* ---------------------------------------------------------------- directories */

/* mkdir(pathname, mode) */
SEC("tracepoint/syscalls/sys_enter_mkdir")
int enter_mkdir(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_MKDIR);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	r->mode = (__u32)ctx->args[1];
	return file_send(r);
}
FILE_EXIT(mkdir)

/* mkdirat(dfd, pathname, mode) */
SEC("tracepoint/syscalls/sys_enter_mkdirat")
int enter_mkdirat(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_MKDIR);
	if (!r)
		return 0;
	r->dirfd = (__s32)ctx->args[0];
	file_path(r, ctx->args[1]);
	r->mode = (__u32)ctx->args[2];
	return file_send(r);
}
FILE_EXIT(mkdirat)

/* mknod(filename, mode, dev): a regular file, FIFO, socket or device node; the mode carries
 * the file type (S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK), dev the device number. */
SEC("tracepoint/syscalls/sys_enter_mknod")
int enter_mknod(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_MKNOD);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	r->mode = (__u32)ctx->args[1];
	r->flags = (__u32)ctx->args[2];
	return file_send(r);
}
FILE_EXIT(mknod)

/* mknodat(dfd, filename, mode, dev) */
SEC("tracepoint/syscalls/sys_enter_mknodat")
int enter_mknodat(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_MKNOD);
	if (!r)
		return 0;
	r->dirfd = (__s32)ctx->args[0];
	file_path(r, ctx->args[1]);
	r->mode = (__u32)ctx->args[2];
	r->flags = (__u32)ctx->args[3];
	return file_send(r);
}
FILE_EXIT(mknodat)

/* chdir(filename) */
SEC("tracepoint/syscalls/sys_enter_chdir")
int enter_chdir(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_CHDIR);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	return file_send(r);
}
FILE_EXIT(chdir)

/* fchdir(fd) */
SEC("tracepoint/syscalls/sys_enter_fchdir")
int enter_fchdir(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_FCHDIR);
	if (!r)
		return 0;
	r->fd = (__s32)ctx->args[0];
	r->rflags |= FILE_BY_FD;
	return file_send(r);
}
FILE_EXIT(fchdir)

/* ---------------------------------------------------------------- fd copies */

/* dup, dup2, dup3 and fcntl(F_DUPFD*) make a second fd for an open file: the collector copies
 * what it knows of the old fd (its path) to the new one (the result), so that a later *at call
 * through the copy resolves against the right directory (without this, dup2 of one directory
 * onto another's fd would make the log name the wrong directory). No event of their own. */

#define F_DUPFD 0
#define F_DUPFD_CLOEXEC 1030

static __always_inline int dup_enter(__u64 oldfd)
{
	struct rec_file_args *r = file_begin(FOP_DUP);
	if (!r)
		return 0;
	r->fd = (__s32)oldfd;
	r->rflags |= FILE_BY_FD;
	return file_send(r);
}

/* The entry and exit programs of a dup call whose first argument is the old fd. */
#define DUP_CALL(name)                                    \
	SEC("tracepoint/syscalls/sys_enter_" #name)       \
	int enter_##name(struct tp_sys_enter *ctx)        \
	{                                                 \
		return dup_enter(ctx->args[0]);           \
	}                                                 \
	FILE_EXIT(name)

DUP_CALL(dup)  /* dup(oldfd) */
DUP_CALL(dup2) /* dup2(oldfd, newfd) */
DUP_CALL(dup3) /* dup3(oldfd, newfd, flags) */

/* fcntl(fd, cmd, arg): only F_DUPFD and F_DUPFD_CLOEXEC, checked before the cgroup filter
 * (fcntl is frequent, and its other commands do not concern paths). */
SEC("tracepoint/syscalls/sys_enter_fcntl")
int enter_fcntl(struct tp_sys_enter *ctx)
{
	__u32 cmd = (__u32)ctx->args[1];
	if (cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC)
		return 0;
	return dup_enter(ctx->args[0]);
}
FILE_EXIT(fcntl)

/* ---------------------------------------------------------------- attributes */

/* chmod(filename, mode) */
SEC("tracepoint/syscalls/sys_enter_chmod")
int enter_chmod(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_CHMOD);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	r->mode = (__u32)ctx->args[1];
	return file_send(r);
}
FILE_EXIT(chmod)

/* fchmodat(dfd, filename, mode) and fchmodat2(dfd, filename, mode, flags): `flags` is 0 for
 * fchmodat, which has none. */
static __always_inline int chmodat_enter(struct tp_sys_enter *ctx, __u64 flags)
{
	struct rec_file_args *r = file_begin(FOP_CHMOD);
	if (!r)
		return 0;
	r->dirfd = (__s32)ctx->args[0];
	file_path(r, ctx->args[1]);
	r->mode = (__u32)ctx->args[2];
	r->flags = (__u32)flags;
	return file_send(r);
}

SEC("tracepoint/syscalls/sys_enter_fchmodat")
int enter_fchmodat(struct tp_sys_enter *ctx)
{
	return chmodat_enter(ctx, 0);
}
FILE_EXIT(fchmodat)

/* fchmodat2 is 6.6+ (glibc 2.39+ uses it for AT_SYMLINK_NOFOLLOW, and any program can call it
 * directly); attached only where the kernel has it. */
SEC("tracepoint/syscalls/sys_enter_fchmodat2")
int enter_fchmodat2(struct tp_sys_enter *ctx)
{
	return chmodat_enter(ctx, ctx->args[3]);
}
FILE_EXIT(fchmodat2)

/* fchmod(fd, mode) */
SEC("tracepoint/syscalls/sys_enter_fchmod")
int enter_fchmod(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_CHMOD);
	if (!r)
		return 0;
	r->fd = (__s32)ctx->args[0];
	r->rflags |= FILE_BY_FD;
	r->mode = (__u32)ctx->args[1];
	return file_send(r);
}
FILE_EXIT(fchmod)

/* fchown(fd, user, group) */
SEC("tracepoint/syscalls/sys_enter_fchown")
int enter_fchown(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_CHOWN);
	if (!r)
		return 0;
	r->fd = (__s32)ctx->args[0];
	r->rflags |= FILE_BY_FD;
	r->uid = (__u32)ctx->args[1];
	r->gid = (__u32)ctx->args[2];
	return file_send(r);
}
FILE_EXIT(fchown)

/* lchown(filename, user, group): chown of the link itself */
SEC("tracepoint/syscalls/sys_enter_lchown")
int enter_lchown(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_CHOWN);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	r->uid = (__u32)ctx->args[1];
	r->gid = (__u32)ctx->args[2];
	r->flags = 0x100; /* AT_SYMLINK_NOFOLLOW, as fchownat spells lchown */
	return file_send(r);
}
FILE_EXIT(lchown)

/* chown(filename, user, group) */
SEC("tracepoint/syscalls/sys_enter_chown")
int enter_chown(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_CHOWN);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	r->uid = (__u32)ctx->args[1];
	r->gid = (__u32)ctx->args[2];
	return file_send(r);
}
FILE_EXIT(chown)

/* fchownat(dfd, filename, user, group, flag) */
SEC("tracepoint/syscalls/sys_enter_fchownat")
int enter_fchownat(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_CHOWN);
	if (!r)
		return 0;
	r->dirfd = (__s32)ctx->args[0];
	file_path(r, ctx->args[1]);
	r->uid = (__u32)ctx->args[2];
	r->gid = (__u32)ctx->args[3];
	r->flags = (__u32)ctx->args[4];
	return file_send(r);
}
FILE_EXIT(fchownat)

/* ---------------------------------------------------------------- links */

/* link(oldname, newname) */
SEC("tracepoint/syscalls/sys_enter_link")
int enter_link(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_LINK);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	file_path2(r, ctx->args[1]);
	return file_send(r);
}
FILE_EXIT(link)

/* linkat(olddfd, oldname, newdfd, newname, flags) */
SEC("tracepoint/syscalls/sys_enter_linkat")
int enter_linkat(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_LINK);
	if (!r)
		return 0;
	r->dirfd = (__s32)ctx->args[0];
	file_path(r, ctx->args[1]);
	r->dirfd2 = (__s32)ctx->args[2];
	file_path2(r, ctx->args[3]);
	r->flags = (__u32)ctx->args[4];
	return file_send(r);
}
FILE_EXIT(linkat)

/* symlink(oldname, newname): path = the target as written, path2 = the new link */
SEC("tracepoint/syscalls/sys_enter_symlink")
int enter_symlink(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_SYMLINK);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	file_path2(r, ctx->args[1]);
	return file_send(r);
}
FILE_EXIT(symlink)

/* symlinkat(oldname, newdfd, newname) */
SEC("tracepoint/syscalls/sys_enter_symlinkat")
int enter_symlinkat(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_SYMLINK);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	r->dirfd2 = (__s32)ctx->args[1];
	file_path2(r, ctx->args[2]);
	return file_send(r);
}
FILE_EXIT(symlinkat)

/* ---------------------------------------------------------------- truncate */

/* truncate(path, length) */
SEC("tracepoint/syscalls/sys_enter_truncate")
int enter_truncate(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_TRUNCATE);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	r->length = (__s64)ctx->args[1];
	return file_send(r);
}
FILE_EXIT(truncate)

/* ftruncate(fd, length) */
SEC("tracepoint/syscalls/sys_enter_ftruncate")
int enter_ftruncate(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_FTRUNCATE);
	if (!r)
		return 0;
	r->fd = (__s32)ctx->args[0];
	r->rflags |= FILE_BY_FD;
	r->length = (__s64)ctx->args[1];
	return file_send(r);
}
FILE_EXIT(ftruncate)

/* ---------------------------------------------------------------- mounts */

/* mount(dev_name, dir_name, type, flags, data): path = the mount point, path2 = the source */
SEC("tracepoint/syscalls/sys_enter_mount")
int enter_mount(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_MOUNT);
	if (!r)
		return 0;
	file_path(r, ctx->args[1]);
	if (ctx->args[0])
		file_path2(r, ctx->args[0]);
	if (ctx->args[2] &&
	    bpf_probe_read_user_str(r->fstype, sizeof(r->fstype), (const void *)ctx->args[2]) <= 0)
		r->fstype[0] = 0;
	r->flags = ctx->args[3];
	return file_send(r);
}
FILE_EXIT(mount)

/* umount(name, flags) (the umount2 syscall; its tracepoint is named umount) */
SEC("tracepoint/syscalls/sys_enter_umount")
int enter_umount(struct tp_sys_enter *ctx)
{
	struct rec_file_args *r = file_begin(FOP_UMOUNT);
	if (!r)
		return 0;
	file_path(r, ctx->args[0]);
	r->flags = (__u32)ctx->args[1];
	return file_send(r);
}
FILE_EXIT(umount)
