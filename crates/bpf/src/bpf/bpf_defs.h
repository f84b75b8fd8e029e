/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few BPF definitions process.bpf.c needs, written by hand so that building the objects
 * requires clang alone (no libbpf-dev, no vmlinux.h). Helper ids and map type numbers are the
 * stable UAPI values of include/uapi/linux/bpf.h; they never change once released.
 */
#ifndef SANDTRAIL_BPF_DEFS_H
#define SANDTRAIL_BPF_DEFS_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))

/* BTF-defined maps, as libbpf's bpf_helpers.h spells them (aya reads the same encoding). */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

/* enum bpf_map_type (UAPI). */
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_RINGBUF 27

/* Map update flags. */
#define BPF_ANY 0
#define BPF_NOEXIST 1

/* Ring buffer flags (BPF_RB_*) and bpf_ringbuf_query() selectors. */
#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0

/* Helper functions, by their UAPI ids (enum bpf_func_id). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;
static __u64 (*bpf_get_current_cgroup_id)(void) = (void *)80;
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)112;
static long (*bpf_probe_read_user_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)114;
static __u64 (*bpf_get_current_ancestor_cgroup_id)(int ancestor_level) = (void *)123;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) = (void *)130;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static __u64 (*bpf_ringbuf_query)(void *ringbuf, __u64 flags) = (void *)134;
/* Returns a BTF-typed pointer (kernel 5.11+); sched_exec_btf reads the credentials through it. */
struct task_struct;
static struct task_struct *(*bpf_get_current_task_btf)(void) = (void *)158;
/* The user registers saved at the current system call's entry, BTF-typed (kernel 5.15+); the
 * file programs that run at a call's exit alone read its arguments from them. */
struct pt_regs;
static struct pt_regs *(*bpf_task_pt_regs)(struct task_struct *task) = (void *)175;
/* Calls callback_fn(i, callback_ctx) for i = 0 .. nr_loops-1 until it returns 1 (kernel 5.17+);
 * the file programs walk the descriptors a process received with it. */
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) = (void *)181;

#endif
