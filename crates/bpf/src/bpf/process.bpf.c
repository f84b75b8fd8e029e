// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sandtrail process collection: exec (with argv and result), fork, exit, reaping and set*id
 * calls, and file operations (file_progs.h, included at the end), of the tasks in the watched
 * cgroup v2 subtrees, through one BPF ring buffer.
 *
 * Written for kernels in lockdown "confidentiality" mode: only tracepoint programs, reading their
 * own context and user memory (bpf_probe_read_user[_str]). No bpf_probe_read_kernel, no
 * __kconfig, no kprobes/fentry/LSM. The kernel structs read are the credentials of
 * sched_exec_btf (a BTF tracepoint, with sched_exec as its fallback), the saved user registers
 * (struct pt_regs, through bpf_task_pt_regs) of the programs that record a call at its exit alone
 * (the file programs call_<name>, call_wait4 and call_waitid; the entry/exit pairs are their
 * fallback), and the task's ids, credentials and cgroup for the call_<name> programs' filter and
 * header, all through BTF-typed pointers, CO-RE relocated by the loader ("kernel types" below).
 *
 * The tracepoint context structs below are written by hand from
 * /sys/kernel/tracing/events/<category>/<name>/format (kernel 6.18, x86_64). Their layouts are
 * part of the kernel's tracing ABI; syscall tracepoints have had this layout (8 bytes of common
 * fields, the syscall number, then every argument as an 8-byte slot from offset 16) since 4.x.
 *
 * The record layouts (struct rec_*) are decoded by crates/bpf/src/record.rs: keep both in step.
 */
#include "bpf_defs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TASK_COMM_LEN 16
#define FILENAME_MAX_LEN 4096
/* Largest argv capture; a power of two. The cap in force is argv_cap (set at load time). */
#define ARGV_MAX 65536
/* Most argv entries read per exec (bounded loop for the verifier); more sets argv_truncated. */
#define MAX_ARGS 1024
/* Deepest cgroup level looked at for a watched ancestor. */
#define MAX_CGROUP_DEPTH 32

#define SIG_DFL 0
#define SIG_IGN 1
#define SIGKILL 9
#define CLONE_THREAD 0x00010000ULL

/* Record kinds (struct rec_hdr.kind). */
#define REC_EXEC_ARGS 1
#define REC_EXEC_FAILED 2
#define REC_EXEC 3
#define REC_FORK 4
#define REC_EXIT 5
#define REC_CRED 6
#define REC_REAP 7

/* wait_call.kind */
#define WAIT_WAIT4 1
#define WAIT_WAITID 2

/* siginfo si_code for SIGCHLD */
#define CLD_EXITED 1
#define CLD_KILLED 2
#define CLD_DUMPED 3

/* rec_cred.call */
#define CRED_SETUID 1
#define CRED_SETREUID 2
#define CRED_SETRESUID 3
#define CRED_SETGID 4
#define CRED_SETREGID 5
#define CRED_SETRESGID 6

/* rec_exec_args.flags */
#define EXEC_ARGV_TRUNCATED 1
#define EXEC_FILENAME_TRUNCATED 2
#define EXEC_AT 4
#define EXEC_ARGV_FAULT 8

/* proc_state.flags and rec_exit.flags */
#define EXIT_HAS_CODE 1      /* exit_group() or the leader's exit() gave the code */
#define EXIT_HAS_SIGNAL 2    /* killed by a signal whose default action is fatal */
#define EXIT_CORE_SIGNAL 4   /* that signal's default action dumps core */
#define EXIT_GROUP_CALLED 8  /* exit_group() called: later SIGKILLs are the kernel's own zap */
#define EXIT_UNTRACKED 16    /* (record only) the process was not tracked before it exited */

/* Index of the losses array. */
#define LOSS_RINGBUF 0
#define LOSS_PROC_MAP_FULL 1
#define LOSS_SCRATCH 2
#define LOSS_CLONE_MAP_FULL 3
#define LOSS_CRED_MAP_FULL 4
#define LOSS_WAIT_MAP_FULL 5
#define LOSS_REAP_UNREADABLE 6
#define LOSS_FILE_MAP_FULL_SLOT 7 /* file_progs.h: LOSS_FILE_MAP_FULL */
#define LOSS_SLOTS 8

/* ---------------------------------------------------------------- tracepoint contexts */

/* syscalls/sys_enter_execve: filename @16, argv @24, envp @32 */
struct tp_enter_execve {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__u64 filename;
	__u64 argv;
	__u64 envp;
};

/* syscalls/sys_enter_execveat: fd @16, filename @24, argv @32, envp @40, flags @48 */
struct tp_enter_execveat {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__u64 fd;
	__u64 filename;
	__u64 argv;
	__u64 envp;
	__u64 flags;
};

/* syscalls/sys_exit_* (execve, execveat, clone, clone3): ret @16 */
struct tp_sys_exit {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__s64 ret;
};

/* syscalls/sys_enter_exit_group and sys_enter_exit: error_code @16 (an int in an 8-byte slot) */
struct tp_enter_exit {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__u64 error_code;
};

/* syscalls/sys_enter_clone: clone_flags @16 */
struct tp_enter_clone {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__u64 clone_flags;
};

/* syscalls/sys_enter_clone3: uargs @16 (struct clone_args *, whose first u64 is flags), size @24 */
struct tp_enter_clone3 {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__u64 uargs;
	__u64 size;
};

/* syscalls/sys_enter_set{,re,res}{u,g}id: up to three ids, each a uid_t/gid_t in an 8-byte
 * slot from offset 16 (setuid/setgid: id @16; setre*: r @16, e @24; setres*: r @16, e @24,
 * s @32) */
struct tp_enter_setid {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__u64 id[3];
};

/* syscalls/sys_enter_wait4: upid @16, stat_addr @24, options @32, ru @40 */
struct tp_enter_wait4 {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__u64 upid;
	__u64 stat_addr;
	__u64 options;
	__u64 ru;
};

/* syscalls/sys_enter_waitid: which @16, upid @24, infop @32, options @40, ru @48 */
struct tp_enter_waitid {
	__u64 common;
	__s32 syscall_nr;
	__u32 pad;
	__u64 which;
	__u64 upid;
	__u64 infop;
	__u64 options;
	__u64 ru;
};

/* sched/sched_process_exec: __data_loc filename @8, pid @12, old_pid @16 */
struct tp_sched_process_exec {
	__u64 common;
	__u32 filename_loc;
	__s32 pid;
	__s32 old_pid;
};

/* sched/sched_process_fork: __data_loc parent_comm @8, parent_pid @12, __data_loc child_comm @16,
 * child_pid @20 */
struct tp_sched_process_fork {
	__u64 common;
	__u32 parent_comm_loc;
	__s32 parent_pid;
	__u32 child_comm_loc;
	__s32 child_pid;
};

/* sched/sched_process_exit: comm[16] @8, pid @24, prio @28, group_dead @32 */
struct tp_sched_process_exit {
	__u64 common;
	char comm[TASK_COMM_LEN];
	__s32 pid;
	__s32 prio;
	__u8 group_dead;
};

/* signal/signal_generate: sig @8, errno @12, code @16, comm[16] @20, pid @36, group @40,
 * result @44 */
struct tp_signal_generate {
	__u64 common;
	__s32 sig;
	__s32 err;
	__s32 code;
	char comm[TASK_COMM_LEN];
	__s32 pid;
	__s32 group;
	__s32 result;
};

/* signal/signal_deliver: sig @8, errno @12, code @16, sa_handler @24, sa_flags @32 */
struct tp_signal_deliver {
	__u64 common;
	__s32 sig;
	__s32 err;
	__s32 code;
	__u32 pad;
	__u64 sa_handler;
	__u64 sa_flags;
};

/* enum trace_signal_result (include/trace/events/signal.h) */
#define TRACE_SIGNAL_DELIVERED 0
#define TRACE_SIGNAL_LOSE_INFO 4

/* ---------------------------------------------------------------- records */

struct rec_hdr {
	__u32 kind;
	__u32 pid;  /* thread id of the acting task */
	__u32 tgid; /* process id of the acting task */
	__u32 ppid; /* parent process id as tracked by the probe; 0 when unknown (and in file
		     * records, which leave the parent and comm to user space: see fill_file_hdr) */
	__u64 ktime_ns;
	__u64 cgroup_id;
	__u32 uid; /* real uid/gid (bpf_get_current_uid_gid), host namespace */
	__u32 gid;
	char comm[TASK_COMM_LEN];
};

#define EXEC_DATA_MAX (2 * FILENAME_MAX_LEN + 2 * ARGV_MAX)

struct rec_exec_args {
	struct rec_hdr h;
	__u32 flags;
	__s32 dirfd;   /* execveat only */
	__u32 at_flags; /* execveat only */
	__u32 filename_len; /* bytes of data[] holding the filename, NUL included */
	__u32 args_len;     /* bytes of data[] after the filename: argc NUL-terminated strings */
	__u32 argc;
	char data[EXEC_DATA_MAX];
};

struct rec_exec_failed {
	struct rec_hdr h;
	__s64 ret; /* -errno */
};

struct rec_exec {
	struct rec_hdr h;
	__u32 old_pid; /* thread id that called execve (differs from pid when a thread exec'd) */
	__u32 creds;   /* 1: euid and egid below are the new image's (sched_exec_btf), 0: unknown */
	__u32 euid;
	__u32 egid;
};

struct rec_fork {
	struct rec_hdr h; /* the parent */
	__u32 child_pid;
	__u32 pad;
};

struct rec_exit {
	struct rec_hdr h;
	__s32 code;
	__u32 sig;
	__u32 flags;
	__u32 pad;
};

struct rec_cred {
	struct rec_hdr h; /* after the call: h.uid/h.gid are the new real ids */
	__u32 call;       /* CRED_* */
	__u32 ids[3];     /* the arguments as passed; (u32)-1 = unchanged */
};

struct rec_reap {
	struct rec_hdr h; /* the reaper (the parent that waited) */
	__u32 child_pid;
	__s32 status; /* the wait status word the kernel gave the parent (as wait4 stores it) */
};

/* A wait4()/waitid() in progress, by thread id: where the kernel will write the result. */
struct wait_call {
	__u32 kind;
	__u32 pad;
	__u64 addr;
};

/* A set*id call in progress, by thread id. */
struct cred_call {
	__u32 call;
	__u32 ids[3];
};

/* What the probe remembers about a tracked (watched) process, by tgid. */
struct proc_state {
	__u32 ppid;
	__s32 code;
	__u32 sig;
	__u32 gen_sig; /* last fatal-by-default signal generated for it and not yet handled */
	__u32 flags;
	__u32 pad;
};

/* ---------------------------------------------------------------- maps */

/* Ring buffer size in bytes; the loader sets it (power of two, multiple of the page size). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* Watched cgroup v2 ids (the inode number of the cgroup directory). Value unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} watched SEC(".maps");

/* The generation of `watched`: user space adds one after every change of it, which voids
 * every CPU's `filter_cache`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} filter_gen SEC(".maps");

/* The cgroup filter's last answer on this CPU: the cgroup id it was for, the generation of
 * `watched` it was computed under, and the answer. Syscalls come in runs from one task, so
 * most programs answer from here (two inlined array lookups) instead of walking the
 * ancestors with a hash lookup each, which unwatched host tasks would otherwise pay at every
 * traced syscall. */
struct filter_cache {
	__u64 cgroup_id;
	__u32 gen;
	__u32 watched;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter_cache);
} filter_cache SEC(".maps");

/* Tracked processes by tgid. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct proc_state);
} procs SEC(".maps");

/* clone flags of a clone()/clone3() in progress, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} clones SEC(".maps");

/* set*id calls in progress of tracked processes, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct cred_call);
} creds SEC(".maps");

/* wait4/waitid calls in progress of tracked processes, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct wait_call);
} waits SEC(".maps");

/* A file call in progress (file_calls, file_progs.h): its op (0: none in progress) and, when a
 * path read faulted at entry, the user pointers to read again at exit. */
struct file_call {
	__u32 op;
	__u32 faulted; /* FILE_PATH*_FAULT */
	__u64 ptr;
	__u64 ptr2;
};

/* The file call in progress of each thread that made one in a watched subtree, by thread id.
 * An entry lives as long as its thread (removed at sched_process_exit, and at an exec by a
 * non-leader thread for its old tid) and is rewritten in place at each call. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct file_call);
} file_calls SEC(".maps");

/* Drops, counted per CPU (index: LOSS_*). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOSS_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} losses SEC(".maps");

/* Per-CPU scratch for exec records (too large for the stack or a per-CPU map value). The
 * loader sets max_entries to the number of possible CPUs; indexed by the current CPU. Safe
 * because tracepoint programs run with preemption disabled (syscall tracepoints became
 * faultable in 6.x, but perf_syscall_enter/exit take guard(preempt_notrace) before calling BPF)
 * and never nest on one CPU (bpf_prog_active; a skipped run is counted as recursion_misses). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rec_exec_args);
} scratch SEC(".maps");

/* Argv bytes captured at most per exec (<= ARGV_MAX); set at load time. */
const volatile __u32 argv_cap = ARGV_MAX;

/* Wake the reader only once this many bytes wait in the ring buffer (set at load time; the
 * reader also polls on a short timer, so a quiet session's records still flow). Waking the
 * reader for every record costs a context switch per record. */
const volatile __u32 wakeup_bytes = 0;

/* How often (in records, per CPU) a program looks at how much waits unread. The look reads
 * the consumer position, a cache line the reader writes from another CPU: at every record it
 * cost about 150 ns of the ~1 us a file call's two programs take, measured with
 * `sandtrail-bench overhead --prog-stats`. Set at load time (1 for small thresholds). */
const volatile __u32 wakeup_every = 1;

/* Records submitted on this CPU since the last look. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} wakeup_count SEC(".maps");

/* ---------------------------------------------------------------- helpers */

static __always_inline __u64 rb_wakeup(void)
{
	if (!wakeup_bytes)
		return 0; /* the kernel's default: wake the reader at every record */
	if (wakeup_every > 1) {
		__u32 zero = 0;
		__u32 *n = bpf_map_lookup_elem(&wakeup_count, &zero);
		if (n) {
			__u32 c = *n + 1;
			if (c < wakeup_every) {
				*n = c;
				return BPF_RB_NO_WAKEUP;
			}
			*n = 0;
		}
	}
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
									  : BPF_RB_NO_WAKEUP;
}

/* ---------------------------------------------------------------- kernel types (BTF) */

/* The kernel's types some programs read through BTF-typed pointers (direct loads, which work
 * under lockdown `confidentiality`, where the bpf_probe_read_kernel helper is refused), reduced
 * to the fields read. The loader relocates each access against the running kernel's BTF (CO-RE:
 * `preserve_access_index`), so the layout here need not match the kernel's. Read by
 * sched_exec_btf (the new image's effective ids), by the programs that record a call at its
 * exit alone (the saved argument registers), and by the file programs among them for their
 * filter and header (task_watched_cgroup, fill_file_hdr_task). */
struct kid_btf {
	__u32 val;
};

struct cred {
	struct kid_btf uid;
	struct kid_btf gid;
	struct kid_btf euid;
	struct kid_btf egid;
} __attribute__((preserve_access_index));

struct kernfs_node {
	__u64 id; /* a cgroup's id is its kernfs node's (5.5+) */
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp; /* the task's cgroup in the v2 hierarchy */
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;  /* thread id */
	int tgid; /* process id */
	const struct cred *cred;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

/* The x86-64 user registers of a system call, reduced to its argument registers. */
struct pt_regs {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
	unsigned long r10;
	unsigned long r8;
	unsigned long r9;
} __attribute__((preserve_access_index));

/* ---------------------------------------------------------------- filter and header */

static __always_inline void count_loss(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&losses, &slot);
	if (n)
		*n += 1;
}

static __always_inline int in_watched_subtree(__u64 id)
{
	if (bpf_map_lookup_elem(&watched, &id))
		return 1;
	for (int level = 0; level < MAX_CGROUP_DEPTH; level++) {
		__u64 anc = bpf_get_current_ancestor_cgroup_id(level);
		if (anc == 0 || anc == id)
			break;
		if (bpf_map_lookup_elem(&watched, &anc))
			return 1;
	}
	return 0;
}

/* The current task's cgroup v2 id when it is in a watched cgroup or below one, else 0 (no
 * cgroup has id 0: the root's is 1). A task's cgroup can change between two calls, but the
 * answer is keyed by the cgroup id, and a cgroup's ancestors never change. */
static __always_inline __u64 watched_id(__u64 id)
{
	__u32 zero = 0;
	__u32 *gen = bpf_map_lookup_elem(&filter_gen, &zero);
	struct filter_cache *c = bpf_map_lookup_elem(&filter_cache, &zero);
	if (!gen || !c)
		return in_watched_subtree(id) ? id : 0;
	__u32 g = *gen;
	if (c->cgroup_id == id && c->gen == g)
		return c->watched ? id : 0;
	int w = in_watched_subtree(id);
	c->cgroup_id = id;
	c->gen = g;
	c->watched = w;
	return w ? id : 0;
}

static __always_inline __u64 watched_cgroup(void)
{
	return watched_id(bpf_get_current_cgroup_id());
}

/* watched_cgroup for a program that has the current task's BTF pointer (5.15+): the cgroup id
 * bpf_get_current_cgroup_id returns (task->cgroups->dfl_cgrp->kn->id), by four loads instead
 * of a helper call. A helper call costs tens of ns on this host's kernel, where every return
 * pays the CPU's speculative-return-stack mitigation; these programs run at every file call. */
static __always_inline __u64 task_watched_cgroup(struct task_struct *t)
{
	return watched_id(t->cgroups->dfl_cgrp->kn->id);
}

/* Whether the current task is in a watched cgroup or below one. */
static __always_inline int in_watched_cgroup(void)
{
	return watched_cgroup() != 0;
}

/* The header fields every record fills the same way; ppid 0 and comm left to the caller. */
static __always_inline void set_hdr(struct rec_hdr *h, __u32 kind, __u32 tid, __u32 tgid,
				    __u32 uid, __u32 gid, __u64 cgroup_id)
{
	h->kind = kind;
	h->pid = tid;
	h->tgid = tgid;
	h->ppid = 0;
	h->ktime_ns = bpf_ktime_get_ns();
	h->cgroup_id = cgroup_id;
	h->uid = uid;
	h->gid = gid;
}

static __always_inline void fill_hdr_ids(struct rec_hdr *h, __u32 kind, __u64 cgroup_id)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	set_hdr(h, kind, (__u32)pid_tgid, pid_tgid >> 32, (__u32)uid_gid, uid_gid >> 32, cgroup_id);
}

static __always_inline void fill_hdr(struct rec_hdr *h, __u32 kind)
{
	fill_hdr_ids(h, kind, bpf_get_current_cgroup_id());
	struct proc_state *p = bpf_map_lookup_elem(&procs, &h->tgid);
	if (p)
		h->ppid = p->ppid;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* The header of a file record (REC_FILE_ARGS), made often (every open of every process in a
 * session): without the two parts user space already has from the process's fork and exec
 * records, the parent (ppid 0: a hash lookup) and the comm (empty: a helper call). Each
 * costs tens of ns in the cold state these programs run in, measured with
 * `sandtrail-bench overhead --prog-stats`. `cgroup_id` is the filter's answer. */
static __always_inline void fill_file_hdr(struct rec_hdr *h, __u32 kind, __u64 cgroup_id)
{
	fill_hdr_ids(h, kind, cgroup_id);
	__builtin_memset(h->comm, 0, sizeof(h->comm));
}

/* fill_file_hdr for a program that has the current task's BTF pointer: the thread and process
 * ids and the real uid and gid (what bpf_get_current_pid_tgid and bpf_get_current_uid_gid
 * return: the task's ids in the initial namespaces, its subjective credentials' uid and gid)
 * by loads instead of two helper calls. */
static __always_inline void fill_file_hdr_task(struct rec_hdr *h, __u32 kind, __u64 cgroup_id,
					       struct task_struct *t)
{
	const struct cred *c = t->cred;
	set_hdr(h, kind, t->pid, t->tgid, c->uid.val, c->gid.val, cgroup_id);
	__builtin_memset(h->comm, 0, sizeof(h->comm));
}

static __always_inline struct proc_state *track(__u32 tgid, __u32 ppid)
{
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	if (p)
		return p;
	struct proc_state init = {.ppid = ppid};
	/* NOEXIST: a concurrent insert for the same tgid wins; only a full map is a loss. */
	bpf_map_update_elem(&procs, &tgid, &init, BPF_NOEXIST);
	p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p)
		count_loss(LOSS_PROC_MAP_FULL);
	return p;
}

/* Signals whose default action terminates the process (term or core). */
static __always_inline int sig_default_fatal(int sig)
{
	if (sig < 1 || sig > 64)
		return 0;
	switch (sig) {
	case 17: /* SIGCHLD */
	case 18: /* SIGCONT */
	case 19: /* SIGSTOP */
	case 20: /* SIGTSTP */
	case 21: /* SIGTTIN */
	case 22: /* SIGTTOU */
	case 23: /* SIGURG */
	case 28: /* SIGWINCH */
		return 0;
	}
	return 1;
}

/* Signals whose default action dumps core (SIG_KERNEL_COREDUMP_MASK). */
static __always_inline int sig_coredump(int sig)
{
	switch (sig) {
	case 3:  /* SIGQUIT */
	case 4:  /* SIGILL */
	case 5:  /* SIGTRAP */
	case 6:  /* SIGABRT */
	case 7:  /* SIGBUS */
	case 8:  /* SIGFPE */
	case 11: /* SIGSEGV */
	case 24: /* SIGXCPU */
	case 25: /* SIGXFSZ */
	case 31: /* SIGSYS */
		return 1;
	}
	return 0;
}

/* ---------------------------------------------------------------- exec */

static __always_inline int exec_enter(__u64 filename, __u64 argv, __u32 flags, __s32 dirfd, __u32 at_flags)
{
	if (!in_watched_cgroup())
		return 0;
	__u32 cpu = bpf_get_smp_processor_id();
	struct rec_exec_args *r = bpf_map_lookup_elem(&scratch, &cpu);
	if (!r) {
		count_loss(LOSS_SCRATCH);
		return 0;
	}
	fill_hdr(&r->h, REC_EXEC_ARGS);
	if (!r->h.ppid)
		track(r->h.tgid, 0);

	long n = bpf_probe_read_user_str(r->data, FILENAME_MAX_LEN, (const void *)filename);
	if (n < 0) {
		r->data[0] = 0;
		n = 1;
	} else if (n >= FILENAME_MAX_LEN) {
		flags |= EXEC_FILENAME_TRUNCATED;
	}
	__u32 fl = (__u32)n & (2 * FILENAME_MAX_LEN - 1);

	__u32 cap = argv_cap;
	if (cap > ARGV_MAX)
		cap = ARGV_MAX;
	__u32 off = 0;
	__u32 argc = 0;
	int i;
	for (i = 0; i < MAX_ARGS; i++) {
		__u64 p = 0;
		if (bpf_probe_read_user(&p, sizeof(p), (const void *)(argv + i * 8))) {
			flags |= EXEC_ARGV_FAULT;
			break;
		}
		if (!p)
			break;
		if (off >= cap) {
			flags |= EXEC_ARGV_TRUNCATED;
			break;
		}
		__u32 room = (cap - off) & (2 * ARGV_MAX - 1);
		if (room > ARGV_MAX)
			room = ARGV_MAX;
		long m = bpf_probe_read_user_str(&r->data[fl + (off & (ARGV_MAX - 1))], room, (const void *)p);
		if (m < 0) {
			flags |= EXEC_ARGV_FAULT;
			break;
		}
		off += (__u32)m & (2 * ARGV_MAX - 1);
		argc++;
		if ((__u32)m >= room) {
			flags |= EXEC_ARGV_TRUNCATED;
			break;
		}
	}
	if (i == MAX_ARGS) {
		__u64 p = 0;
		if (bpf_probe_read_user(&p, sizeof(p), (const void *)(argv + MAX_ARGS * 8)) == 0 && p)
			flags |= EXEC_ARGV_TRUNCATED;
	}
	if (off > cap)
		off = cap;
	r->flags = flags;
	r->dirfd = dirfd;
	r->at_flags = at_flags;
	r->filename_len = fl;
	r->args_len = off;
	r->argc = argc;
	/* fl + off <= FILENAME_MAX_LEN + ARGV_MAX; the mask only bounds it for the verifier. */
	__u64 size = (__u64)(fl + off) & (2 * ARGV_MAX - 1);
	if (bpf_ringbuf_output(&events, r, sizeof(*r) - EXEC_DATA_MAX + size, rb_wakeup()))
		count_loss(LOSS_RINGBUF);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int enter_execve(struct tp_enter_execve *ctx)
{
	return exec_enter(ctx->filename, ctx->argv, 0, 0, 0);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int enter_execveat(struct tp_enter_execveat *ctx)
{
	return exec_enter(ctx->filename, ctx->argv, EXEC_AT, (__s32)ctx->fd, (__u32)ctx->flags);
}

static __always_inline int exec_exit(struct tp_sys_exit *ctx)
{
	/* Success is reported by sched_process_exec (in the new image); only failures here. */
	if (ctx->ret >= 0 || !in_watched_cgroup())
		return 0;
	struct rec_exec_failed *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_loss(LOSS_RINGBUF);
		return 0;
	}
	fill_hdr(&r->h, REC_EXEC_FAILED);
	r->ret = ctx->ret;
	bpf_ringbuf_submit(r, rb_wakeup());
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int exit_execve(struct tp_sys_exit *ctx)
{
	return exec_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int exit_execveat(struct tp_sys_exit *ctx)
{
	return exec_exit(ctx);
}

/* A successful exec, in the new image (the current task, now its process's leader): `old_pid`
 * is the thread that called execve; `creds` says whether `euid`/`egid` hold the new
 * credentials (a setuid/setgid file's). */
static __always_inline int exec_done(__u32 old_pid, __u32 creds, __u32 euid, __u32 egid)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (old_pid != (__u32)pid_tgid) {
		__u32 old = old_pid; /* a non-leader thread exec'd: its old tid is gone */
		bpf_map_delete_elem(&file_calls, &old);
	}
	struct proc_state *p = track(tgid, 0);
	if (p) {
		/* Threads killed by de_thread() during this exec were not a death of the process. */
		p->flags = 0;
		p->sig = 0;
		p->code = 0;
		p->gen_sig = 0;
	}
	struct rec_exec *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_loss(LOSS_RINGBUF);
		return 0;
	}
	fill_hdr(&r->h, REC_EXEC);
	r->old_pid = old_pid;
	r->creds = creds;
	r->euid = euid;
	r->egid = egid;
	bpf_ringbuf_submit(r, rb_wakeup());
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int sched_exec(struct tp_sched_process_exec *ctx)
{
	if (!in_watched_cgroup())
		return 0;
	return exec_done(ctx->old_pid, 0, 0, 0);
}

/* sched_exec with the new image's effective ids, read from the task's credentials through
 * BTF-typed pointers (direct loads: this works under lockdown `confidentiality`, where the
 * bpf_probe_read_kernel helper is refused). The loader attaches it instead of sched_exec when
 * the kernel accepts it; user space then needs no /proc read to learn a setuid exec's euid.
 * Arguments (BTF tracepoint): struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm;
 * `p` is the current task. */
SEC("tp_btf/sched_process_exec")
int sched_exec_btf(__u64 *ctx)
{
	if (!in_watched_cgroup())
		return 0;
	struct task_struct *t = bpf_get_current_task_btf();
	const struct cred *c = t->cred;
	return exec_done((__u32)ctx[1], 1, c->euid.val, c->egid.val);
}

/* ---------------------------------------------------------------- fork */

SEC("tracepoint/syscalls/sys_enter_clone")
int enter_clone(struct tp_enter_clone *ctx)
{
	if (!in_watched_cgroup())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 flags = ctx->clone_flags;
	if (bpf_map_update_elem(&clones, &tid, &flags, BPF_ANY))
		count_loss(LOSS_CLONE_MAP_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_clone3")
int enter_clone3(struct tp_enter_clone3 *ctx)
{
	if (!in_watched_cgroup())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 flags = 0;
	/* struct clone_args starts with __aligned_u64 flags. */
	bpf_probe_read_user(&flags, sizeof(flags), (const void *)ctx->uargs);
	if (bpf_map_update_elem(&clones, &tid, &flags, BPF_ANY))
		count_loss(LOSS_CLONE_MAP_FULL);
	return 0;
}

static __always_inline int clone_exit(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&clones, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_clone")
int exit_clone(struct tp_sys_exit *ctx)
{
	return clone_exit();
}

SEC("tracepoint/syscalls/sys_exit_clone3")
int exit_clone3(struct tp_sys_exit *ctx)
{
	return clone_exit();
}

SEC("tracepoint/sched/sched_process_fork")
int sched_fork(struct tp_sched_process_fork *ctx)
{
	if (!in_watched_cgroup())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *flags = bpf_map_lookup_elem(&clones, &tid);
	if (flags && (*flags & CLONE_THREAD))
		return 0; /* a new thread, not a new process */
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 child = ctx->child_pid;
	track(child, tgid);
	struct rec_fork *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_loss(LOSS_RINGBUF);
		return 0;
	}
	fill_hdr(&r->h, REC_FORK);
	r->child_pid = child;
	r->pad = 0;
	bpf_ringbuf_submit(r, rb_wakeup());
	return 0;
}

/* ---------------------------------------------------------------- credentials */

static __always_inline int setid_enter(struct tp_enter_setid *ctx, __u32 call, int nargs)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (!bpf_map_lookup_elem(&procs, &tgid))
		return 0;
	__u32 tid = (__u32)pid_tgid;
	struct cred_call c = {.call = call};
	c.ids[0] = (__u32)ctx->id[0];
	c.ids[1] = nargs > 1 ? (__u32)ctx->id[1] : 0xffffffff;
	c.ids[2] = nargs > 2 ? (__u32)ctx->id[2] : 0xffffffff;
	if (bpf_map_update_elem(&creds, &tid, &c, BPF_ANY))
		count_loss(LOSS_CRED_MAP_FULL);
	return 0;
}

static __always_inline int setid_exit(struct tp_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct cred_call *c = bpf_map_lookup_elem(&creds, &tid);
	if (!c)
		return 0;
	if (ctx->ret == 0) {
		struct rec_cred *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
		if (!r) {
			count_loss(LOSS_RINGBUF);
		} else {
			fill_hdr(&r->h, REC_CRED);
			r->call = c->call;
			r->ids[0] = c->ids[0];
			r->ids[1] = c->ids[1];
			r->ids[2] = c->ids[2];
			bpf_ringbuf_submit(r, rb_wakeup());
		}
	}
	bpf_map_delete_elem(&creds, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_setuid")
int enter_setuid(struct tp_enter_setid *ctx)
{
	return setid_enter(ctx, CRED_SETUID, 1);
}

SEC("tracepoint/syscalls/sys_enter_setreuid")
int enter_setreuid(struct tp_enter_setid *ctx)
{
	return setid_enter(ctx, CRED_SETREUID, 2);
}

SEC("tracepoint/syscalls/sys_enter_setresuid")
int enter_setresuid(struct tp_enter_setid *ctx)
{
	return setid_enter(ctx, CRED_SETRESUID, 3);
}

SEC("tracepoint/syscalls/sys_enter_setgid")
int enter_setgid(struct tp_enter_setid *ctx)
{
	return setid_enter(ctx, CRED_SETGID, 1);
}

SEC("tracepoint/syscalls/sys_enter_setregid")
int enter_setregid(struct tp_enter_setid *ctx)
{
	return setid_enter(ctx, CRED_SETREGID, 2);
}

SEC("tracepoint/syscalls/sys_enter_setresgid")
int enter_setresgid(struct tp_enter_setid *ctx)
{
	return setid_enter(ctx, CRED_SETRESGID, 3);
}

SEC("tracepoint/syscalls/sys_exit_setuid")
int exit_setuid(struct tp_sys_exit *ctx)
{
	return setid_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_setreuid")
int exit_setreuid(struct tp_sys_exit *ctx)
{
	return setid_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_setresuid")
int exit_setresuid(struct tp_sys_exit *ctx)
{
	return setid_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_setgid")
int exit_setgid(struct tp_sys_exit *ctx)
{
	return setid_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_setregid")
int exit_setregid(struct tp_sys_exit *ctx)
{
	return setid_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_setresgid")
int exit_setresgid(struct tp_sys_exit *ctx)
{
	return setid_exit(ctx);
}

/* The current system call's arguments at its exit: the user registers the kernel saved at its
 * entry (bpf_task_pt_regs, BTF-typed; 5.15+), which the calls traced this way (file calls,
 * wait4, waitid) do not change. */
static __always_inline void task_regs_args(struct task_struct *t, __u64 *args)
{
	struct pt_regs *regs = bpf_task_pt_regs(t);
	args[0] = regs->di;
	args[1] = regs->si;
	args[2] = regs->dx;
	args[3] = regs->r10;
	args[4] = regs->r8;
	args[5] = regs->r9;
}

static __always_inline void regs_args(__u64 *args)
{
	task_regs_args(bpf_get_current_task_btf(), args);
}

/* ---------------------------------------------------------------- reaping */


/* The parent's wait gives the kernel's own status word of the child (exit code, or signal and
 * whether a core was dumped). Only for reapers that are tracked processes themselves. */
static __always_inline int wait_enter(__u32 kind, __u64 addr)
{
	if (!addr)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (!bpf_map_lookup_elem(&procs, &tgid))
		return 0;
	__u32 tid = (__u32)pid_tgid;
	struct wait_call w = {.kind = kind, .addr = addr};
	if (bpf_map_update_elem(&waits, &tid, &w, BPF_ANY))
		count_loss(LOSS_WAIT_MAP_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_wait4")
int enter_wait4(struct tp_enter_wait4 *ctx)
{
	return wait_enter(WAIT_WAIT4, ctx->stat_addr);
}

SEC("tracepoint/syscalls/sys_enter_waitid")
int enter_waitid(struct tp_enter_waitid *ctx)
{
	return wait_enter(WAIT_WAITID, ctx->infop);
}

/* The REAP record of a wait of `kind` that returned `ctx->ret` and wrote its result at `addr`. */
static __always_inline int wait_done(struct tp_sys_exit *ctx, __u32 kind, __u64 addr)
{
	__u32 child = 0;
	__s32 status = 0;
	if (kind == WAIT_WAIT4) {
		if (ctx->ret <= 0)
			return 0;
		child = (__u32)ctx->ret;
		if (bpf_probe_read_user(&status, sizeof(status), (const void *)addr)) {
			count_loss(LOSS_REAP_UNREADABLE);
			return 0;
		}
		/* stopped (0x7f) or continued (0xffff): not an end */
		if ((status & 0xff) == 0x7f || status == 0xffff)
			return 0;
	} else {
		if (ctx->ret != 0)
			return 0;
		/* siginfo: si_code @8, si_pid @16, si_status @24 */
		__s32 fields[7] = {};
		if (bpf_probe_read_user(fields, sizeof(fields), (const void *)addr)) {
			count_loss(LOSS_REAP_UNREADABLE);
			return 0;
		}
		child = (__u32)fields[4];
		if (!child)
			return 0; /* WNOHANG and nothing to reap */
		__s32 code = fields[2];
		__s32 st = fields[6];
		if (code == CLD_EXITED)
			status = (st & 0xff) << 8;
		else if (code == CLD_KILLED)
			status = st & 0x7f;
		else if (code == CLD_DUMPED)
			status = (st & 0x7f) | 0x80;
		else
			return 0; /* stopped, trapped, continued */
	}
	struct rec_reap *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_loss(LOSS_RINGBUF);
		return 0;
	}
	fill_hdr(&r->h, REC_REAP);
	r->child_pid = child;
	r->status = status;
	bpf_ringbuf_submit(r, rb_wakeup());
	return 0;
}

/* The exit of a wait whose entry was recorded (enter_wait4/enter_waitid). */
static __always_inline int wait_exit(struct tp_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct wait_call *w = bpf_map_lookup_elem(&waits, &tid);
	if (!w)
		return 0;
	__u32 kind = w->kind;
	__u64 addr = w->addr;
	bpf_map_delete_elem(&waits, &tid);
	return wait_done(ctx, kind, addr);
}

SEC("tracepoint/syscalls/sys_exit_wait4")
int exit_wait4(struct tp_sys_exit *ctx)
{
	return wait_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_waitid")
int exit_waitid(struct tp_sys_exit *ctx)
{
	return wait_exit(ctx);
}

/* The same at the exit alone, where the kernel allows it (as the file programs call_<name>):
 * the result's address from the registers saved at the call's entry; one program run, no
 * `waits` entry. Only for reapers that are tracked processes, and only calls that reaped. */
static __always_inline int wait_at_exit(struct tp_sys_exit *ctx, __u32 kind, int addr_arg)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&procs, &tgid))
		return 0;
	__u64 args[6];
	regs_args(args);
	__u64 addr = args[addr_arg];
	if (!addr)
		return 0;
	return wait_done(ctx, kind, addr);
}

/* wait4(upid, stat_addr, options, ru): a child's pid when it reaped one */
SEC("tracepoint/syscalls/sys_exit_wait4")
int call_wait4(struct tp_sys_exit *ctx)
{
	if (ctx->ret <= 0)
		return 0;
	return wait_at_exit(ctx, WAIT_WAIT4, 1);
}

/* waitid(which, upid, infop, options, ru): 0, and the child in *infop (none with WNOHANG) */
SEC("tracepoint/syscalls/sys_exit_waitid")
int call_waitid(struct tp_sys_exit *ctx)
{
	if (ctx->ret != 0)
		return 0;
	return wait_at_exit(ctx, WAIT_WAITID, 2);
}

/* ---------------------------------------------------------------- exit */

SEC("tracepoint/syscalls/sys_enter_exit_group")
int enter_exit_group(struct tp_enter_exit *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p || (p->flags & EXIT_HAS_SIGNAL))
		return 0;
	p->code = ctx->error_code & 0xff;
	p->flags |= EXIT_HAS_CODE | EXIT_GROUP_CALLED;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_exit")
int enter_exit(struct tp_enter_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	/* The process's status is the leader's exit code unless exit_group() or a signal ends it. */
	if ((__u32)pid_tgid != tgid)
		return 0;
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p || (p->flags & (EXIT_HAS_SIGNAL | EXIT_GROUP_CALLED)))
		return 0;
	p->code = ctx->error_code & 0xff;
	p->flags |= EXIT_HAS_CODE;
	return 0;
}

SEC("tracepoint/signal/signal_generate")
int signal_generate(struct tp_signal_generate *ctx)
{
	/* Runs in the sender's context: the target is ctx->pid. */
	if (ctx->result != TRACE_SIGNAL_DELIVERED && ctx->result != TRACE_SIGNAL_LOSE_INFO)
		return 0;
	int sig = ctx->sig;
	if (!sig_default_fatal(sig) || sig_coredump(sig))
		return 0;
	__u32 target = ctx->pid;
	struct proc_state *p = bpf_map_lookup_elem(&procs, &target);
	if (p)
		p->gen_sig = sig;
	return 0;
}

SEC("tracepoint/signal/signal_deliver")
int signal_deliver(struct tp_signal_deliver *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p || (p->flags & (EXIT_HAS_SIGNAL | EXIT_GROUP_CALLED)))
		return 0;
	int sig = ctx->sig;
	__u64 handler = ctx->sa_handler;
	if (handler == SIG_DFL && sig_default_fatal(sig)) {
		/* A fatal signal without a core dump is turned into SIGKILL for every thread
		 * (complete_signal()); the signal that started it is the last one generated. */
		int death = sig;
		if (sig == SIGKILL && p->gen_sig)
			death = p->gen_sig;
		p->sig = death;
		p->flags |= EXIT_HAS_SIGNAL;
		if (sig_coredump(death))
			p->flags |= EXIT_CORE_SIGNAL;
	} else if (handler != SIG_DFL && handler != SIG_IGN && p->gen_sig == (__u32)sig) {
		p->gen_sig = 0; /* handled: it did not kill the process */
	}
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int sched_exit(struct tp_sched_process_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&file_calls, &tid); /* every thread: its file call slot, if any */
	if (!ctx->group_dead)
		return 0; /* a thread, not the last one */
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct proc_state *p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p && !in_watched_cgroup())
		return 0;
	struct rec_exit *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_loss(LOSS_RINGBUF);
	} else {
		fill_hdr(&r->h, REC_EXIT);
		if (p) {
			r->code = p->code;
			r->sig = p->sig;
			r->flags = p->flags & (EXIT_HAS_CODE | EXIT_HAS_SIGNAL | EXIT_CORE_SIGNAL);
		} else {
			r->code = 0;
			r->sig = 0;
			r->flags = EXIT_UNTRACKED;
		}
		r->pad = 0;
		bpf_ringbuf_submit(r, rb_wakeup());
	}
	if (p)
		bpf_map_delete_elem(&procs, &tgid);
	return 0;
}

/* ---------------------------------------------------------------- files */

#include "file_progs.h"
