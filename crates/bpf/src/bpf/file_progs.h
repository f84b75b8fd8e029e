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
 * Where the kernel allows it, every call is recorded at its exit alone instead: one
 * REC_FILE_CALL, the entry record with the result (call_<name>, made by FILE_CALL below).
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

/* This CPU's record under construction, every field but the header and the op set to its
 * "none" value; 0 (a loss counted) if the scratch map cannot be read. */
static __always_inline struct rec_file_args *file_scratch_clear(void)
{
	__u32 zero = 0;
	struct rec_file_args *r = bpf_map_lookup_elem(&file_scratch, &zero);
	if (!r) {
		count_loss(LOSS_SCRATCH);
		return 0;
	}
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

/* A cleared record for a call of the current task, if it is watched; its op and arguments are
 * the caller's `<name>_fill` to set. */
static __always_inline struct rec_file_args *file_begin(void)
{
	__u64 cgroup_id = watched_cgroup();
	if (!cgroup_id)
		return 0;
	struct rec_file_args *r = file_scratch_clear();
	if (r)
		fill_file_hdr(&r->h, REC_FILE_ARGS, cgroup_id);
	return r;
}

/* file_begin for the programs that have the current task's BTF pointer (call_<name>): its
 * filter and header by loads instead of three helper calls. */
static __always_inline struct rec_file_args *file_begin_task(struct task_struct *t)
{
	__u64 cgroup_id = task_watched_cgroup(t);
	if (!cgroup_id)
		return 0;
	struct rec_file_args *r = file_scratch_clear();
	if (r)
		fill_file_hdr_task(&r->h, REC_FILE_ARGS, cgroup_id, t);
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

/* A whole call in one record, made at its exit: the entry record's fields and the result. */
static __always_inline int file_call_send(struct rec_file_args *r, __s64 ret)
{
	r->h.kind = REC_FILE_CALL;
	r->ret = ret;
	if (bpf_ringbuf_output(&events, r, file_size(r), rb_wakeup()))
		count_loss(LOSS_RINGBUF);
	return 0;
}

/* The programs of the file call `name`, made from `name##_fill`, which sets the record's op and
 * reads the call's arguments from `args` (the syscall's arguments in order):
 *   - enter_<name> and exit_<name>, the pair: REC_FILE_ARGS at entry, the result at exit;
 *   - call_<name>, at the exit alone: one REC_FILE_CALL with the arguments from the registers
 *     saved at entry, the paths from user memory, which the kernel has just read (so their
 *     pages are present: a fault is final, and the pointer file_path keeps for the pair's
 *     re-read goes unused). One program run, one record, no file_calls entry.
 * The loader attaches call_<name> where the kernel accepts it (kernel BTF, 5.15+) and the pair
 * otherwise. */
#define FILE_CALL(name)                                           \
	SEC("tracepoint/syscalls/sys_enter_" #name)               \
	int enter_##name(struct tp_sys_enter *ctx)                \
	{                                                         \
		struct rec_file_args *r = file_begin();          \
		if (!r)                                           \
			return 0;                                 \
		name##_fill(r, ctx->args);                        \
		return file_send(r);                              \
	}                                                         \
	FILE_EXIT(name)                                           \
	SEC("tracepoint/syscalls/sys_exit_" #name)                \
	int call_##name(struct tp_sys_exit *ctx)                  \
	{                                                         \
		struct task_struct *t = bpf_get_current_task_btf(); \
		struct rec_file_args *r = file_begin_task(t);    \
		if (!r)                                           \
			return 0;                                 \
		__u64 args[6];                                    \
		task_regs_args(t, args);                          \
		name##_fill(r, args);                             \
		return file_call_send(r, ctx->ret);               \
	}

/* ---------------------------------------------------------------- opens */

/* open(filename, flags, mode) */
static __always_inline void open_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_OPEN;
	file_path(r, args[0]);
	r->flags = (__u32)args[1];
	r->mode = (__u32)args[2];
}
FILE_CALL(open)

/* creat(pathname, mode) = open(pathname, O_CREAT|O_WRONLY|O_TRUNC, mode) */
static __always_inline void creat_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_OPEN;
	file_path(r, args[0]);
	r->flags = O_CREAT | O_WRONLY | O_TRUNC;
	r->mode = (__u32)args[1];
}
FILE_CALL(creat)

/* openat(dfd, filename, flags, mode) */
static __always_inline void openat_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_OPEN;
	r->dirfd = (__s32)args[0];
	file_path(r, args[1]);
	r->flags = (__u32)args[2];
	r->mode = (__u32)args[3];
}
FILE_CALL(openat)

/* openat2(dfd, filename, how, usize); struct open_how { u64 flags; u64 mode; u64 resolve; } */
static __always_inline void openat2_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_OPEN;
	r->dirfd = (__s32)args[0];
	file_path(r, args[1]);
	__u64 how[2] = {};
	if (bpf_probe_read_user(how, sizeof(how), (const void *)args[2]) == 0) {
		r->flags = how[0];
		r->mode = (__u32)how[1];
	}
}
FILE_CALL(openat2)

/* ---------------------------------------------------------------- deletes */

/* unlink(pathname) */
static __always_inline void unlink_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_UNLINK;
	file_path(r, args[0]);
}
FILE_CALL(unlink)

/* unlinkat(dfd, pathname, flag); AT_REMOVEDIR makes it an rmdir */
static __always_inline void unlinkat_fill(struct rec_file_args *r, const __u64 *args)
{
	__u32 flag = (__u32)args[2];
	r->op = flag & AT_REMOVEDIR ? FOP_RMDIR : FOP_UNLINK;
	r->dirfd = (__s32)args[0];
	file_path(r, args[1]);
	r->flags = flag;
}
FILE_CALL(unlinkat)

/* rmdir(pathname) */
static __always_inline void rmdir_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_RMDIR;
	file_path(r, args[0]);
}
FILE_CALL(rmdir)

/* ---------------------------------------------------------------- renames */

/* rename(oldname, newname) */
static __always_inline void rename_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_RENAME;
	file_path(r, args[0]);
	file_path2(r, args[1]);
}
FILE_CALL(rename)

/* renameat(olddfd, oldname, newdfd, newname) */
static __always_inline void renameat_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_RENAME;
	r->dirfd = (__s32)args[0];
	file_path(r, args[1]);
	r->dirfd2 = (__s32)args[2];
	file_path2(r, args[3]);
}
FILE_CALL(renameat)

/* renameat2(olddfd, oldname, newdfd, newname, flags) */
static __always_inline void renameat2_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_RENAME;
	r->dirfd = (__s32)args[0];
	file_path(r, args[1]);
	r->dirfd2 = (__s32)args[2];
	file_path2(r, args[3]);
	r->flags = (__u32)args[4];
}
FILE_CALL(renameat2)

/* ---------------------------------------------------------------- directories */

/* mkdir(pathname, mode) */
static __always_inline void mkdir_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_MKDIR;
	file_path(r, args[0]);
	r->mode = (__u32)args[1];
}
FILE_CALL(mkdir)

/* mkdirat(dfd, pathname, mode) */
static __always_inline void mkdirat_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_MKDIR;
	r->dirfd = (__s32)args[0];
	file_path(r, args[1]);
	r->mode = (__u32)args[2];
}
FILE_CALL(mkdirat)

/* mknod(filename, mode, dev): a regular file, FIFO, socket or device node; the mode carries
 * the file type (S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK), dev the device number. */
static __always_inline void mknod_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_MKNOD;
	file_path(r, args[0]);
	r->mode = (__u32)args[1];
	r->flags = (__u32)args[2];
}
FILE_CALL(mknod)

/* mknodat(dfd, filename, mode, dev) */
static __always_inline void mknodat_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_MKNOD;
	r->dirfd = (__s32)args[0];
	file_path(r, args[1]);
	r->mode = (__u32)args[2];
	r->flags = (__u32)args[3];
}
FILE_CALL(mknodat)

/* chdir(filename) */
static __always_inline void chdir_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_CHDIR;
	file_path(r, args[0]);
}
FILE_CALL(chdir)

/* fchdir(fd) */
static __always_inline void fchdir_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_FCHDIR;
	r->fd = (__s32)args[0];
	r->rflags |= FILE_BY_FD;
}
FILE_CALL(fchdir)

/* ---------------------------------------------------------------- fd copies */

/* dup, dup2, dup3 and fcntl(F_DUPFD*) make a second fd for an open file: the collector copies
 * what it knows of the old fd (its path) to the new one (the result), so that a later *at call
 * through the copy resolves against the right directory (without this, dup2 of one directory
 * onto another's fd would make the log name the wrong directory). No event of their own. */

#define F_DUPFD 0
#define F_DUPFD_CLOEXEC 1030

/* dup(oldfd), dup2(oldfd, newfd), dup3(oldfd, newfd, flags): the old fd comes first. */
static __always_inline void dup_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_DUP;
	r->fd = (__s32)args[0];
	r->rflags |= FILE_BY_FD;
}
#define dup2_fill dup_fill
#define dup3_fill dup_fill
FILE_CALL(dup)
FILE_CALL(dup2)
FILE_CALL(dup3)

/* fcntl(fd, cmd, arg): only F_DUPFD and F_DUPFD_CLOEXEC, checked before the cgroup filter
 * (fcntl is frequent, and its other commands do not concern paths); by hand, for that order. */
static __always_inline int fcntl_dups(__u64 cmd)
{
	return (__u32)cmd == F_DUPFD || (__u32)cmd == F_DUPFD_CLOEXEC;
}

SEC("tracepoint/syscalls/sys_enter_fcntl")
int enter_fcntl(struct tp_sys_enter *ctx)
{
	if (!fcntl_dups(ctx->args[1]))
		return 0;
	struct rec_file_args *r = file_begin();
	if (!r)
		return 0;
	dup_fill(r, ctx->args);
	return file_send(r);
}
FILE_EXIT(fcntl)

SEC("tracepoint/syscalls/sys_exit_fcntl")
int call_fcntl(struct tp_sys_exit *ctx)
{
	__u64 args[6];
	regs_args(args);
	if (!fcntl_dups(args[1]))
		return 0;
	struct rec_file_args *r = file_begin();
	if (!r)
		return 0;
	dup_fill(r, args);
	return file_call_send(r, ctx->ret);
}

/* ---------------------------------------------------------------- fds from elsewhere */

/* Descriptors another process handed over: over a unix socket (recvmsg with SCM_RIGHTS) or
 * with pidfd_getfd. Each is recorded as a copy (FOP_DUP) of fd -1, an fd the collector never
 * knows, so that it forgets what a file it saw earlier under that number was: a later *at call
 * through the received fd is then named by /proc (and a read through it logged one by one)
 * rather than by a stale directory. At the call's exit alone (the fds exist only then), with
 * the other at-exit programs; the entry/exit pairs of older kernels leave these calls out, and
 * so does recvmmsg (walking many messages' control data is more than the verifier takes here). */

#define SOL_SOCKET 1
#define SCM_RIGHTS 1
/* Control messages looked at per message (credentials, pidfd and security labels may come
 * before the descriptors; a unix socket passes all of a message's fds in one). */
#define RECV_CMSGS_MAX 8

/* struct cmsghdr (x86-64). */
struct cmsg_head {
	__u64 len;
	__s32 level;
	__s32 type;
};

/* Records `fd` as a dup of fd -1 (dup_fill's record for an old fd nobody knows). */
static __always_inline void fd_from_elsewhere(__s64 fd)
{
	struct rec_file_args *r = file_begin();
	if (!r)
		return;
	const __u64 unknown = (__u64)-1;
	dup_fill(r, &unknown);
	file_call_send(r, fd);
}

/* The received fds being walked by recv_fd. */
struct recv_fds {
	__u64 addr; /* user address of the first */
	__u64 n;
};

static long recv_fd(__u64 i, void *ctx)
{
	struct recv_fds *f = ctx;
	__s32 fd;
	if (bpf_probe_read_user(&fd, sizeof(fd), (void *)(f->addr + i * sizeof(fd))))
		return 1;
	fd_from_elsewhere(fd);
	return 0;
}

/* recvmsg(fd, msg, flags): the SCM_RIGHTS fds of the struct msghdr at msg (user memory, as the
 * call left it: msg_controllen is the length it wrote). */
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int call_recvmsg(struct tp_sys_exit *ctx)
{
	if (ctx->ret < 0 || !in_watched_cgroup())
		return 0;
	__u64 args[6];
	regs_args(args);
	__u64 ctl[2]; /* msg_control, msg_controllen: offsets 32 and 40 of struct msghdr */
	if (bpf_probe_read_user(ctl, sizeof(ctl), (void *)(args[1] + 32)))
		return 0;
	struct recv_fds f = {};
	__u64 off = 0;
	for (int m = 0; m < RECV_CMSGS_MAX; m++) {
		struct cmsg_head c;
		if (off + sizeof(c) > ctl[1] ||
		    bpf_probe_read_user(&c, sizeof(c), (void *)(ctl[0] + off)))
			break;
		if (c.len < sizeof(c) || c.len > ctl[1] - off)
			break;
		if (c.level == SOL_SOCKET && c.type == SCM_RIGHTS) {
			f.addr = ctl[0] + off + sizeof(c);
			f.n = (c.len - sizeof(c)) / sizeof(__s32); /* at most SCM_MAX_FD, 253 */
			break;
		}
		off += (c.len + 7) & ~7ULL;
	}
	if (f.n)
		bpf_loop(f.n, recv_fd, &f, 0);
	return 0;
}

/* pidfd_getfd(pidfd, targetfd, flags): a copy of another process's fd. */
SEC("tracepoint/syscalls/sys_exit_pidfd_getfd")
int call_pidfd_getfd(struct tp_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		fd_from_elsewhere(ctx->ret);
	return 0;
}

/* Descriptors a process makes that name no file by a path: sockets, pipes, memfds, event,
 * timer, signal, inotify and fanotify fds, epoll instances, pidfds, userfaultfds, perf events,
 * io_uring instances, POSIX message queues, the new mount API's fds, files opened by handle, and
 * the pidfds clone and clone3 make with CLONE_PIDFD.
 * Each is recorded as a copy of fd -1 (fd_from_elsewhere), so that the collector forgets what a
 * file it saw earlier under that number was: without this, a memfd given the number of a closed
 * /etc file and then truncated (`memfd_create`, `ftruncate`) was logged as a truncate of that
 * file. (`close` itself is not traced: a record per close would double the volume.) */
#define NEW_FD(name)                                    \
	SEC("tracepoint/syscalls/sys_exit_" #name)      \
	int call_##name(struct tp_sys_exit *ctx)        \
	{                                               \
		if (ctx->ret >= 0)                      \
			fd_from_elsewhere(ctx->ret);    \
		return 0;                               \
	}
NEW_FD(socket)
NEW_FD(accept)
NEW_FD(accept4)
NEW_FD(memfd_create)
NEW_FD(memfd_secret)
NEW_FD(eventfd)
NEW_FD(eventfd2)
NEW_FD(epoll_create)
NEW_FD(epoll_create1)
NEW_FD(timerfd_create)
NEW_FD(signalfd)
NEW_FD(signalfd4)
NEW_FD(inotify_init)
NEW_FD(inotify_init1)
NEW_FD(fanotify_init)
NEW_FD(userfaultfd)
NEW_FD(pidfd_open)
NEW_FD(perf_event_open)
NEW_FD(io_uring_setup)
NEW_FD(mq_open)
NEW_FD(open_tree)
NEW_FD(open_tree_attr)
NEW_FD(fsopen)
NEW_FD(fsmount)
NEW_FD(fspick)
NEW_FD(open_by_handle_at)

/* The two fds pipe, pipe2 and socketpair write to the int[2] at `addr` when they return 0. */
static __always_inline int new_fd_pair(struct tp_sys_exit *ctx, int arg)
{
	if (ctx->ret != 0 || !in_watched_cgroup())
		return 0;
	__u64 args[6];
	regs_args(args);
	__s32 fds[2];
	if (bpf_probe_read_user(fds, sizeof(fds), (void *)args[arg & 3]))
		return 0;
	fd_from_elsewhere(fds[0]);
	fd_from_elsewhere(fds[1]);
	return 0;
}

/* pipe(fds), pipe2(fds, flags) */
SEC("tracepoint/syscalls/sys_exit_pipe")
int call_pipe(struct tp_sys_exit *ctx)
{
	return new_fd_pair(ctx, 0);
}

SEC("tracepoint/syscalls/sys_exit_pipe2")
int call_pipe2(struct tp_sys_exit *ctx)
{
	return new_fd_pair(ctx, 0);
}

/* socketpair(domain, type, protocol, sv) */
SEC("tracepoint/syscalls/sys_exit_socketpair")
int call_socketpair(struct tp_sys_exit *ctx)
{
	return new_fd_pair(ctx, 3);
}

#define CLONE_PIDFD 0x00001000ULL

/* The pidfd a clone or clone3 with CLONE_PIDFD wrote to the int at `addr` (in the parent:
 * the call returned the child's pid). */
static __always_inline void new_pidfd(__u64 addr)
{
	__s32 fd;
	if (!bpf_probe_read_user(&fd, sizeof(fd), (void *)addr))
		fd_from_elsewhere(fd);
}

/* clone(flags, newsp, parent_tid, child_tid, tls): with CLONE_PIDFD the pidfd goes to
 * parent_tid. (Also attached: exit_clone, which ends the call's thread/process tracking.) */
SEC("tracepoint/syscalls/sys_exit_clone")
int call_clone(struct tp_sys_exit *ctx)
{
	if (ctx->ret <= 0 || !in_watched_cgroup())
		return 0;
	__u64 args[6];
	regs_args(args);
	if (args[0] & CLONE_PIDFD)
		new_pidfd(args[2]);
	return 0;
}

/* clone3(uargs, size): struct clone_args begins with the flags and the pidfd's address. */
SEC("tracepoint/syscalls/sys_exit_clone3")
int call_clone3(struct tp_sys_exit *ctx)
{
	if (ctx->ret <= 0 || !in_watched_cgroup())
		return 0;
	__u64 args[6];
	regs_args(args);
	__u64 head[2]; /* flags, pidfd */
	if (bpf_probe_read_user(head, sizeof(head), (void *)args[0]))
		return 0;
	if (head[0] & CLONE_PIDFD)
		new_pidfd(head[1]);
	return 0;
}

/* ---------------------------------------------------------------- attributes */

/* chmod(filename, mode) */
static __always_inline void chmod_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_CHMOD;
	file_path(r, args[0]);
	r->mode = (__u32)args[1];
}
FILE_CALL(chmod)

/* fchmodat(dfd, filename, mode) and fchmodat2(dfd, filename, mode, flags): `flags` is 0 for
 * fchmodat, which has none. */
static __always_inline void chmodat_fill(struct rec_file_args *r, const __u64 *args, __u64 flags)
{
	r->op = FOP_CHMOD;
	r->dirfd = (__s32)args[0];
	file_path(r, args[1]);
	r->mode = (__u32)args[2];
	r->flags = (__u32)flags;
}

static __always_inline void fchmodat_fill(struct rec_file_args *r, const __u64 *args)
{
	chmodat_fill(r, args, 0);
}
FILE_CALL(fchmodat)

/* fchmodat2 is 6.6+ (glibc 2.39+ uses it for AT_SYMLINK_NOFOLLOW, and any program can call it
 * directly); attached only where the kernel has it. */
static __always_inline void fchmodat2_fill(struct rec_file_args *r, const __u64 *args)
{
	chmodat_fill(r, args, args[3]);
}
FILE_CALL(fchmodat2)

/* fchmod(fd, mode) */
static __always_inline void fchmod_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_CHMOD;
	r->fd = (__s32)args[0];
	r->rflags |= FILE_BY_FD;
	r->mode = (__u32)args[1];
}
FILE_CALL(fchmod)

/* fchown(fd, user, group) */
static __always_inline void fchown_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_CHOWN;
	r->fd = (__s32)args[0];
	r->rflags |= FILE_BY_FD;
	r->uid = (__u32)args[1];
	r->gid = (__u32)args[2];
}
FILE_CALL(fchown)

/* lchown(filename, user, group): chown of the link itself */
static __always_inline void lchown_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_CHOWN;
	file_path(r, args[0]);
	r->uid = (__u32)args[1];
	r->gid = (__u32)args[2];
	r->flags = 0x100; /* AT_SYMLINK_NOFOLLOW, as fchownat spells lchown */
}
FILE_CALL(lchown)

/* chown(filename, user, group) */
static __always_inline void chown_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_CHOWN;
	file_path(r, args[0]);
	r->uid = (__u32)args[1];
	r->gid = (__u32)args[2];
}
FILE_CALL(chown)

/* fchownat(dfd, filename, user, group, flag) */
static __always_inline void fchownat_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_CHOWN;
	r->dirfd = (__s32)args[0];
	file_path(r, args[1]);
	r->uid = (__u32)args[2];
	r->gid = (__u32)args[3];
	r->flags = (__u32)args[4];
}
FILE_CALL(fchownat)

/* ---------------------------------------------------------------- links */

/* link(oldname, newname) */
static __always_inline void link_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_LINK;
	file_path(r, args[0]);
	file_path2(r, args[1]);
}
FILE_CALL(link)

/* linkat(olddfd, oldname, newdfd, newname, flags) */
static __always_inline void linkat_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_LINK;
	r->dirfd = (__s32)args[0];
	file_path(r, args[1]);
	r->dirfd2 = (__s32)args[2];
	file_path2(r, args[3]);
	r->flags = (__u32)args[4];
}
FILE_CALL(linkat)

/* symlink(oldname, newname): path = the target as written, path2 = the new link */
static __always_inline void symlink_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_SYMLINK;
	file_path(r, args[0]);
	file_path2(r, args[1]);
}
FILE_CALL(symlink)

/* symlinkat(oldname, newdfd, newname) */
static __always_inline void symlinkat_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_SYMLINK;
	file_path(r, args[0]);
	r->dirfd2 = (__s32)args[1];
	file_path2(r, args[2]);
}
FILE_CALL(symlinkat)

/* ---------------------------------------------------------------- truncate */

/* truncate(path, length) */
static __always_inline void truncate_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_TRUNCATE;
	file_path(r, args[0]);
	r->length = (__s64)args[1];
}
FILE_CALL(truncate)

/* ftruncate(fd, length) */
static __always_inline void ftruncate_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_FTRUNCATE;
	r->fd = (__s32)args[0];
	r->rflags |= FILE_BY_FD;
	r->length = (__s64)args[1];
}
FILE_CALL(ftruncate)

/* ---------------------------------------------------------------- mounts */

/* mount(dev_name, dir_name, type, flags, data): path = the mount point, path2 = the source */
static __always_inline void mount_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_MOUNT;
	file_path(r, args[1]);
	if (args[0])
		file_path2(r, args[0]);
	if (args[2] &&
	    bpf_probe_read_user_str(r->fstype, sizeof(r->fstype), (const void *)args[2]) <= 0)
		r->fstype[0] = 0;
	r->flags = args[3];
}
FILE_CALL(mount)

/* umount(name, flags) (the umount2 syscall; its tracepoint is named umount) */
static __always_inline void umount_fill(struct rec_file_args *r, const __u64 *args)
{
	r->op = FOP_UMOUNT;
	file_path(r, args[0]);
	r->flags = (__u32)args[1];
}
FILE_CALL(umount)
