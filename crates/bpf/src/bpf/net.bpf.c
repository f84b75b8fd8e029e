// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sandtrail egress enforcement: cgroup/connect4, cgroup/connect6, cgroup/sendmsg4 and
 * cgroup/sendmsg6 programs that decide, in the kernel, whether a task of the cgroup subtree they
 * are attached to may connect (TCP, connected UDP) or send an unconnected datagram to an address,
 * and report every attempt, allowed or not, through a ring buffer.
 *
 * Three more programs count what the sockets of that subtree send and receive (net.flow):
 * cgroup_skb/egress and cgroup_skb/ingress add every IP packet's length to the socket's entry
 * of the flows map (by socket cookie), and cgroup/sock_release sends that entry to the
 * flow_events ring buffer and deletes it when the socket is closed. They never drop a packet.
 * cgroup_skb/egress also copies the first up to 512 payload bytes of each socket's first
 * egress packet that carries TCP or UDP payload to the payload_events ring buffer, once per
 * socket, for user space to identify the application protocol (TLS SNI, HTTP, SSH, DNS).
 *
 * Inbound (net.listen, net.accept): cgroup/post_bind4 and cgroup/post_bind6 record every bind()
 * with the binding task and the port the kernel assigned, and a sockops program records each
 * listen() and each accepted TCP connection (no task: it has no process context), to the
 * inbound_events ring buffer. They never deny.
 *
 * One loaded object is one policy: the maps below belong to the object, and the loader
 * (crates/bpf/src/net.rs) loads one object per session cgroup it attaches to.
 *
 * Order of the decision (first match wins):
 *   1. loopback destination (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104, and the unspecified
 *      0.0.0.0, ::, ::ffff:0.0.0.0, which the kernel sends to this host): allow, RULE_LOOPBACK
 *   2. mode none: deny, RULE_MODE_NONE
 *   3. the session's DNS forwarder (config dns4/dns6 and dns_port): allow, RULE_DNS
 *   4. deny4/deny6 longest-prefix match: deny, that entry's rule
 *   5. allow4/allow6 longest-prefix match on (port, address), then on (any port, address):
 *      allow, that entry's rule
 *   6. mode allowlist: deny, RULE_DEFAULT_ALLOWLIST; mode open: log (let through),
 *      RULE_DEFAULT_OPEN
 * An IPv4-mapped IPv6 destination (::ffff:a.b.c.d on a dual-stack socket) is decided by the
 * IPv4 rules. A denied connect() or sendmsg() fails with EPERM (the program returns 0).
 *
 * Written for kernels in lockdown "confidentiality" mode: the programs read only their own
 * context (struct bpf_sock_addr, struct bpf_sock, struct __sk_buff, struct bpf_sock_ops: UAPI)
 * and call helpers; no kernel memory reads.
 *
 * The record layout (struct net_rec) is decoded by crates/bpf/src/net.rs: keep both in step.
 */
#include "bpf_defs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TASK_COMM_LEN 16

/*
 * Records are submitted without waking the reader: a wakeup per connect, packet-count close or
 * payload is a context switch the audited task pays for. Readers poll (NetProbe::next_* wait on
 * the ring's epoll in slices of max_latency, 20 ms by default), so a record waits at most that
 * long; the 1 MiB rings hold thousands of records meanwhile.
 */
#define RB_FLAGS BPF_RB_NO_WAKEUP

/* UAPI values not in bpf_defs.h (shared with the process programs; kept here to stay apart). */
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_LPM_TRIE 11
#define BPF_F_NO_PREALLOC 1
#define AF_INET 2
#define AF_INET6 10
/* The socket cookie of a sock_addr, skb or sock context (one id, a proto per program type). */
static __u64 (*bpf_get_socket_cookie)(void *ctx) = (void *)46;
static struct bpf_sock *(*bpf_sk_fullsock)(struct bpf_sock *sk) = (void *)95;

/* struct bpf_sock (UAPI): the context of cgroup/sock_release and skb->sk. */
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
	__u32 src_ip4;
	__u32 src_ip6[4];
	__u32 src_port;   /* host order */
	__u16 dst_port;   /* network order */
	__u16 pad;
	__u32 dst_ip4;
	__u32 dst_ip6[4];
	__u32 state;
	__s32 rx_queue_mapping;
};

/* struct __sk_buff (UAPI), up to the sk pointer: the context of cgroup_skb programs. */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	union {
		void *flow_keys;
		__u64 flow_keys_slot;
	} __attribute__((aligned(8)));
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	union {
		struct bpf_sock *sk;
		__u64 sk_slot;
	} __attribute__((aligned(8)));
};

/* struct bpf_sock_addr (include/uapi/linux/bpf.h), the context of cgroup/connect* and
 * cgroup/sendmsg*. Addresses and port in network byte order. */
struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4;
	__u32 user_ip6[4];
	__u32 user_port;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 msg_src_ip4;
	__u32 msg_src_ip6[4];
};

/* config.mode */
#define MODE_ALLOWLIST 0 /* the zero value: a loaded but unconfigured object denies */
#define MODE_OPEN 1
#define MODE_NONE 2

/* config.flags */
#define CFG_DNS4 1
#define CFG_DNS6 2

/* net_rec.decision */
#define DECISION_ALLOW 1
#define DECISION_DENY 2
#define DECISION_LOG 3

/* net_rec.hook */
#define HOOK_CONNECT4 1
#define HOOK_CONNECT6 2
#define HOOK_SENDMSG4 3
#define HOOK_SENDMSG6 4

/* Built-in rule ids; user-space entries use ids below RULE_BUILTIN. */
#define RULE_BUILTIN 0xffffff00u
#define RULE_LOOPBACK 0xffffff01u
#define RULE_DNS 0xffffff02u
#define RULE_MODE_NONE 0xffffff03u
#define RULE_DEFAULT_ALLOWLIST 0xffffff04u
#define RULE_DEFAULT_OPEN 0xffffff05u

/* Index of the losses array. */
#define LOSS_RINGBUF 0
#define LOSS_SLOTS 4

struct config {
	__u32 mode;
	__u32 flags;
	__u32 dns4;       /* network order */
	__u32 dns6[4];    /* network order */
	__u32 dns_port;   /* network order, low 16 bits */
};

/* LPM keys: prefix length in bits, then the data matched from its first bit. Allow keys
 * start with the port (network order; 0 = any port), so a (port, prefix) entry has prefix
 * length 16 + the address prefix length. */
struct allow4_key {
	__u32 prefixlen;
	__u8 port[2];
	__u8 addr[4];
	__u8 pad[2]; /* never matched: prefixes end within port+addr */
};
struct allow6_key {
	__u32 prefixlen;
	__u8 port[2];
	__u8 addr[16];
	__u8 pad[2];
};
struct deny4_key {
	__u32 prefixlen;
	__u8 addr[4];
};
struct deny6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* One record per attempt: 88 bytes. */
struct net_rec {
	__u64 ktime_ns;     /* 0 */
	__u64 cgroup_id;    /* 8 */
	__u64 cookie;       /* 16 socket cookie */
	__u32 pid;          /* 24 tgid */
	__u32 tid;          /* 28 */
	__u32 uid;          /* 32 */
	__u32 gid;          /* 36 */
	__u32 rule;         /* 40 */
	__u16 port;         /* 44 host order */
	__u8 hook;          /* 46 */
	__u8 decision;      /* 47 */
	__u16 sock_type;    /* 48 SOCK_STREAM, SOCK_DGRAM, ... */
	__u16 protocol;     /* 50 IPPROTO_* */
	__u8 family;        /* 52 4 or 6 */
	__u8 pad[3];        /* 53 */
	__u8 addr[16];      /* 56 4 bytes for family 4; network order */
	char comm[TASK_COMM_LEN]; /* 72 */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} net_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} net_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct allow4_key);
	__type(value, __u32);
} allow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct allow6_key);
	__type(value, __u32);
} allow6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct deny4_key);
	__type(value, __u32);
} deny4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct deny6_key);
	__type(value, __u32);
} deny6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOSS_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} net_losses SEC(".maps");

static __always_inline void count_loss(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&net_losses, &slot);
	if (n)
		*n += 1;
}

struct verdict {
	__u32 decision;
	__u32 rule;
};

static __always_inline struct config *config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&net_config, &zero);
}

/* Steps 4 to 6 of the decision for an IPv4 address (network order) and port (network
 * order, low 16 bits). */
static __always_inline void decide4(struct config *cfg, __u32 ip, __u32 port, struct verdict *v)
{
	struct deny4_key dk = {.prefixlen = 32};
	__builtin_memcpy(dk.addr, &ip, 4);
	__u32 *rule = bpf_map_lookup_elem(&deny4, &dk);
	if (rule) {
		v->decision = DECISION_DENY;
		v->rule = *rule;
		return;
	}
	struct allow4_key ak = {.prefixlen = 48};
	__u16 p = port;
	__builtin_memcpy(ak.port, &p, 2);
	__builtin_memcpy(ak.addr, &ip, 4);
	rule = bpf_map_lookup_elem(&allow4, &ak);
	if (!rule) {
		ak.port[0] = 0;
		ak.port[1] = 0;
		rule = bpf_map_lookup_elem(&allow4, &ak);
	}
	if (rule) {
		v->decision = DECISION_ALLOW;
		v->rule = *rule;
		return;
	}
	if (cfg->mode == MODE_OPEN) {
		v->decision = DECISION_LOG;
		v->rule = RULE_DEFAULT_OPEN;
	} else {
		v->decision = DECISION_DENY;
		v->rule = RULE_DEFAULT_ALLOWLIST;
	}
}

static __always_inline void decide6(struct config *cfg, const __u32 ip[4], __u32 port,
				    struct verdict *v)
{
	struct deny6_key dk = {.prefixlen = 128};
	__builtin_memcpy(dk.addr, ip, 16);
	__u32 *rule = bpf_map_lookup_elem(&deny6, &dk);
	if (rule) {
		v->decision = DECISION_DENY;
		v->rule = *rule;
		return;
	}
	struct allow6_key ak = {.prefixlen = 144};
	__u16 p = port;
	__builtin_memcpy(ak.port, &p, 2);
	__builtin_memcpy(ak.addr, ip, 16);
	rule = bpf_map_lookup_elem(&allow6, &ak);
	if (!rule) {
		ak.port[0] = 0;
		ak.port[1] = 0;
		rule = bpf_map_lookup_elem(&allow6, &ak);
	}
	if (rule) {
		v->decision = DECISION_ALLOW;
		v->rule = *rule;
		return;
	}
	if (cfg->mode == MODE_OPEN) {
		v->decision = DECISION_LOG;
		v->rule = RULE_DEFAULT_OPEN;
	} else {
		v->decision = DECISION_DENY;
		v->rule = RULE_DEFAULT_ALLOWLIST;
	}
}

/* 127.0.0.0/8, in network order, or 0.0.0.0, which the kernel routes to this host. */
static __always_inline int is_loopback4(__u32 ip)
{
	return (ip & 0xff) == 127 || ip == 0;
}

static __always_inline void emit(struct bpf_sock_addr *ctx, __u8 hook, __u8 family,
				 const __u32 *ip, __u32 port, struct verdict *v)
{
	struct net_rec *r = bpf_ringbuf_reserve(&net_events, sizeof(*r), 0);
	if (!r) {
		count_loss(LOSS_RINGBUF);
		return;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	r->ktime_ns = bpf_ktime_get_ns();
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->cookie = bpf_get_socket_cookie(ctx);
	r->pid = pid_tgid >> 32;
	r->tid = (__u32)pid_tgid;
	r->uid = (__u32)uid_gid;
	r->gid = uid_gid >> 32;
	r->rule = v->rule;
	r->port = __builtin_bswap16((__u16)port);
	r->hook = hook;
	r->decision = v->decision;
	r->sock_type = ctx->type;
	r->protocol = ctx->protocol;
	r->family = family;
	r->pad[0] = 0;
	r->pad[1] = 0;
	r->pad[2] = 0;
	__builtin_memset(r->addr, 0, sizeof(r->addr));
	if (family == 4)
		__builtin_memcpy(r->addr, ip, 4);
	else
		__builtin_memcpy(r->addr, ip, 16);
	__builtin_memset(r->comm, 0, sizeof(r->comm));
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	bpf_ringbuf_submit(r, RB_FLAGS);
}

static __always_inline int handle4(struct bpf_sock_addr *ctx, __u8 hook)
{
	__u32 ip = ctx->user_ip4;
	__u32 port = ctx->user_port & 0xffff;
	struct verdict v = {.decision = DECISION_DENY, .rule = RULE_DEFAULT_ALLOWLIST};
	struct config *cfg = config();
	if (!cfg) {
		/* Cannot happen (an array's only element); fail closed. */
	} else if (is_loopback4(ip)) {
		v.decision = DECISION_ALLOW;
		v.rule = RULE_LOOPBACK;
	} else if (cfg->mode == MODE_NONE) {
		v.rule = RULE_MODE_NONE;
	} else if ((cfg->flags & CFG_DNS4) && ip == cfg->dns4 && port == (cfg->dns_port & 0xffff)) {
		v.decision = DECISION_ALLOW;
		v.rule = RULE_DNS;
	} else {
		decide4(cfg, ip, port, &v);
	}
	emit(ctx, hook, 4, &ip, port, &v);
	return v.decision == DECISION_DENY ? 0 : 1;
}

static __always_inline int handle6(struct bpf_sock_addr *ctx, __u8 hook)
{
	__u32 ip[4];
	ip[0] = ctx->user_ip6[0];
	ip[1] = ctx->user_ip6[1];
	ip[2] = ctx->user_ip6[2];
	ip[3] = ctx->user_ip6[3];
	__u32 port = ctx->user_port & 0xffff;
	/* ::ffff:0:0/96 in network order */
	int mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == __builtin_bswap32(0x0000ffff);
	/* ::1, or ::, which the kernel turns into ::1 */
	int loop6 = ip[0] == 0 && ip[1] == 0 && ip[2] == 0 &&
		    (ip[3] == __builtin_bswap32(1) || ip[3] == 0);
	struct verdict v = {.decision = DECISION_DENY, .rule = RULE_DEFAULT_ALLOWLIST};
	struct config *cfg = config();
	if (!cfg) {
		/* fail closed */
	} else if (loop6 || (mapped && is_loopback4(ip[3]))) {
		v.decision = DECISION_ALLOW;
		v.rule = RULE_LOOPBACK;
	} else if (cfg->mode == MODE_NONE) {
		v.rule = RULE_MODE_NONE;
	} else if (port == (cfg->dns_port & 0xffff) &&
		   (mapped ? ((cfg->flags & CFG_DNS4) && ip[3] == cfg->dns4)
			   : ((cfg->flags & CFG_DNS6) && ip[0] == cfg->dns6[0] &&
			      ip[1] == cfg->dns6[1] && ip[2] == cfg->dns6[2] &&
			      ip[3] == cfg->dns6[3]))) {
		v.decision = DECISION_ALLOW;
		v.rule = RULE_DNS;
	} else if (mapped) {
		decide4(cfg, ip[3], port, &v);
	} else {
		decide6(cfg, ip, port, &v);
	}
	emit(ctx, hook, 6, ip, port, &v);
	return v.decision == DECISION_DENY ? 0 : 1;
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return handle4(ctx, HOOK_CONNECT4);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return handle6(ctx, HOOK_CONNECT6);
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return handle4(ctx, HOOK_SENDMSG4);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return handle6(ctx, HOOK_SENDMSG6);
}

/* ---------------------------------------------------------------- flows (net.flow) */

/* Counters of one socket, by socket cookie; 120 bytes, also the closed-flow record. */
struct flow {
	__u64 first_ns;     /* 0 */
	__u64 last_ns;      /* 8 */
	__u64 cookie;       /* 16 */
	__u64 bytes_out;    /* 24 IP packet lengths, headers included */
	__u64 bytes_in;     /* 32 */
	__u64 packets_out;  /* 40 */
	__u64 packets_in;   /* 48 */
	__u8 src[16];       /* 56 local address, network order (4 bytes for family 4) */
	__u8 dst[16];       /* 72 remote address */
	__u16 src_port;     /* 88 host order */
	__u16 dst_port;     /* 90 host order */
	__u8 family;        /* 92 4 or 6 */
	__u8 protocol;      /* 93 IPPROTO_* */
	__u16 sock_type;    /* 94 */
	__u32 pid;          /* 96 tgid that closed the socket (0 in the live map) */
	__u32 uid;          /* 100 */
	__u64 cgroup_id;    /* 104 cgroup of the closing task */
	__u32 flags;        /* 112 FLOW_* */
	__u32 pad;          /* 116 */
};

/* flow.flags */
#define FLOW_PAYLOAD_DONE 1 /* the first payload was captured, or never will be */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} flow_events SEC(".maps");

#define LOSS_FLOW_RINGBUF 1

static __always_inline void copy_tuple(struct flow *f, struct bpf_sock *sk)
{
	if (sk->family == AF_INET) {
		f->family = 4;
		__u32 a = sk->src_ip4;
		__builtin_memcpy(f->src, &a, 4);
		a = sk->dst_ip4;
		__builtin_memcpy(f->dst, &a, 4);
	} else {
		f->family = 6;
		__u32 a[4];
		a[0] = sk->src_ip6[0];
		a[1] = sk->src_ip6[1];
		a[2] = sk->src_ip6[2];
		a[3] = sk->src_ip6[3];
		__builtin_memcpy(f->src, a, 16);
		a[0] = sk->dst_ip6[0];
		a[1] = sk->dst_ip6[1];
		a[2] = sk->dst_ip6[2];
		a[3] = sk->dst_ip6[3];
		__builtin_memcpy(f->dst, a, 16);
	}
	f->src_port = sk->src_port;
	f->dst_port = __builtin_bswap16(sk->dst_port);
	f->protocol = sk->protocol;
	f->sock_type = sk->type;
}

/* ---------------------------------------------------------------- first payload (L7) */

#define PAYLOAD_MAX 512
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define LOSS_PAYLOAD_RINGBUF 2

static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to, __u32 len) = (void *)26;
static void (*bpf_ringbuf_discard)(void *data, __u64 flags) = (void *)133;

/* The first payload of a socket: 576 bytes. Addresses and ports from the packet's headers. */
struct payload_rec {
	__u64 ktime_ns;     /* 0 */
	__u64 cookie;       /* 8 socket cookie */
	__u8 src[16];       /* 16 network order (4 bytes for family 4) */
	__u8 dst[16];       /* 32 */
	__u16 src_port;     /* 48 host order */
	__u16 dst_port;     /* 50 host order */
	__u8 family;        /* 52 4 or 6 */
	__u8 protocol;      /* 53 IPPROTO_TCP or IPPROTO_UDP */
	__u16 cap_len;      /* 54 bytes of data[] filled, 1 to PAYLOAD_MAX */
	__u32 payload_len;  /* 56 L4 payload length of the packet (a GSO packet's whole payload) */
	__u32 pad;          /* 60 */
	__u8 data[PAYLOAD_MAX]; /* 64 the payload's first cap_len bytes */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} payload_events SEC(".maps");

/*
 * Copies the first payload bytes of an egress packet (skb data starts at the IP header) into
 * payload_events. Returns 1 when the socket is done with (payload sent, or lost to a full ring
 * buffer, or a packet that will never be parsed: not TCP/UDP, IPv6 extension headers, a
 * fragment), 0 when this packet carried no payload (a SYN, a bare ACK) and a later one may.
 */
static __always_inline int capture_payload(struct __sk_buff *skb, __u64 cookie, __u64 now)
{
	__u8 ip[40];
	__u32 l3, l4, proto, family;
	if (bpf_skb_load_bytes(skb, 0, ip, 20) < 0)
		return 0;
	__u8 version = ip[0] >> 4;
	if (version == 4) {
		family = 4;
		l3 = (ip[0] & 0x0f) * 4;
		if (l3 < 20)
			return 1;
		/* A later fragment has no L4 header. */
		if (((ip[6] & 0x1f) | ip[7]) != 0)
			return 1;
		proto = ip[9];
	} else if (version == 6) {
		if (bpf_skb_load_bytes(skb, 0, ip, 40) < 0)
			return 0;
		family = 6;
		l3 = 40;
		proto = ip[6]; /* next header: TCP or UDP directly, no extension header */
	} else {
		return 1;
	}
	if (proto == IPPROTO_TCP) {
		__u8 doff;
		if (bpf_skb_load_bytes(skb, l3 + 12, &doff, 1) < 0)
			return 0;
		l4 = (doff >> 4) * 4;
		if (l4 < 20)
			return 1;
	} else if (proto == IPPROTO_UDP) {
		l4 = 8;
	} else {
		return 1;
	}
	__u32 off = l3 + l4;
	__u32 len = skb->len;
	if (len <= off)
		return 0;
	__u32 plen = len - off;
	__u32 cap = plen > PAYLOAD_MAX ? PAYLOAD_MAX : plen;
	__u16 ports[2];
	if (bpf_skb_load_bytes(skb, l3, ports, 4) < 0)
		return 0;
	struct payload_rec *r = bpf_ringbuf_reserve(&payload_events, sizeof(*r), 0);
	if (!r) {
		count_loss(LOSS_PAYLOAD_RINGBUF);
		return 1;
	}
	r->ktime_ns = now;
	r->cookie = cookie;
	__builtin_memset(r->src, 0, sizeof(r->src));
	__builtin_memset(r->dst, 0, sizeof(r->dst));
	if (family == 4) {
		__builtin_memcpy(r->src, &ip[12], 4);
		__builtin_memcpy(r->dst, &ip[16], 4);
	} else {
		__builtin_memcpy(r->src, &ip[8], 16);
		__builtin_memcpy(r->dst, &ip[24], 16);
	}
	r->src_port = __builtin_bswap16(ports[0]);
	r->dst_port = __builtin_bswap16(ports[1]);
	r->family = family;
	r->protocol = proto;
	r->payload_len = plen;
	r->pad = 0;
	/* For the verifier, a length it can see is in [1, PAYLOAD_MAX]: cap is already, but clang
	 * turns range checks into forms the verifier cannot follow; the empty asm hides cap's range
	 * from clang so that the mask stays (it changes nothing for cap in [1, PAYLOAD_MAX]). */
	asm volatile("" : "+r"(cap));
	cap = ((cap - 1) & (PAYLOAD_MAX - 1)) + 1;
	r->cap_len = cap;
	if (bpf_skb_load_bytes(skb, off, r->data, cap) < 0) {
		bpf_ringbuf_discard(r, 0);
		return 1;
	}
	bpf_ringbuf_submit(r, RB_FLAGS);
	return 1;
}

static __always_inline int count(struct __sk_buff *skb, int egress)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	if (sk->family != AF_INET && sk->family != AF_INET6)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 now = bpf_ktime_get_ns();
	__u64 len = skb->len;
	struct flow *f = bpf_map_lookup_elem(&flows, &cookie);
	if (!f) {
		struct flow init = {};
		init.first_ns = now;
		init.cookie = cookie;
		copy_tuple(&init, sk);
		bpf_map_update_elem(&flows, &cookie, &init, BPF_NOEXIST);
		f = bpf_map_lookup_elem(&flows, &cookie);
		if (!f)
			return 1;
	}
	f->last_ns = now;
	/* The tuple may have been incomplete when the entry was made (before bind/connect). */
	if (f->src_port == 0 || f->dst_port == 0)
		copy_tuple(f, sk);
	if (egress) {
		if (!(f->flags & FLOW_PAYLOAD_DONE) && capture_payload(skb, cookie, now))
			f->flags |= FLOW_PAYLOAD_DONE;
		__sync_fetch_and_add(&f->bytes_out, len);
		__sync_fetch_and_add(&f->packets_out, 1);
	} else {
		__sync_fetch_and_add(&f->bytes_in, len);
		__sync_fetch_and_add(&f->packets_in, 1);
	}
	return 1;
}

SEC("cgroup_skb/egress")
int flow_egress(struct __sk_buff *skb)
{
	return count(skb, 1);
}

SEC("cgroup_skb/ingress")
int flow_ingress(struct __sk_buff *skb)
{
	return count(skb, 0);
}

SEC("cgroup/sock_release")
int flow_release(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct flow *f = bpf_map_lookup_elem(&flows, &cookie);
	if (!f)
		return 1;
	struct flow *r = bpf_ringbuf_reserve(&flow_events, sizeof(*r), 0);
	if (!r) {
		count_loss(LOSS_FLOW_RINGBUF);
		return 1;
	}
	__builtin_memcpy(r, f, sizeof(*r));
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	r->pid = pid_tgid >> 32;
	r->uid = (__u32)bpf_get_current_uid_gid();
	r->cgroup_id = bpf_get_current_cgroup_id();
	bpf_ringbuf_submit(r, RB_FLAGS);
	bpf_map_delete_elem(&flows, &cookie);
	return 1;
}

/* ---------------------------------------------------------------- inbound (net.listen, net.accept) */

/*
 * cgroup/post_bind4 and cgroup/post_bind6 run in the binding task, after bind() has given the
 * socket its local address and port (the port the kernel chose for a bind to port 0): one
 * INBOUND_BIND record each, with the task. They never deny (return 1).
 *
 * The sockops program runs for the TCP sockets of the subtree without process context (often in
 * softirq): on BPF_SOCK_OPS_TCP_LISTEN_CB (listen(2) made the socket a listener) it records an
 * INBOUND_LISTEN, on BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB (the handshake of an incoming connection
 * completed; the context's socket is the new, accepted, socket) an INBOUND_ACCEPT with the local
 * and remote address, and on BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB (a connect() of the subtree
 * completed its handshake) an INBOUND_CONNECTED with the local and remote address: the connect's
 * outcome and source port. Neither has a pid: user space joins a listen record to its bind record by
 * socket cookie and an accept to the bind of its local port. It sets no reply and no flags.
 */

/* struct bpf_sock_ops (UAPI), up to local_port: the context of sockops programs. */
struct bpf_sock_ops {
	__u32 op;
	union {
		__u32 args[4];
		__u32 reply;
		__u32 replylong[4];
	};
	__u32 family;
	__u32 remote_ip4;    /* network order */
	__u32 local_ip4;     /* network order */
	__u32 remote_ip6[4]; /* network order */
	__u32 local_ip6[4];  /* network order */
	__u32 remote_port;   /* network order (the kernel puts the 16 bits in the upper half) */
	__u32 local_port;    /* host order */
};

#define BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB 4
#define BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB 5
#define BPF_SOCK_OPS_TCP_LISTEN_CB 11

/* inbound_rec.kind */
#define INBOUND_BIND 1
#define INBOUND_LISTEN 2
#define INBOUND_ACCEPT 3
#define INBOUND_CONNECTED 4

#define LOSS_INBOUND_RINGBUF 3

/* One bind, listen or accept: 104 bytes. */
struct inbound_rec {
	__u64 ktime_ns;     /* 0 */
	__u64 cgroup_id;    /* 8 bind: the binding task's cgroup; 0 otherwise */
	__u64 cookie;       /* 16 socket cookie (of the accepted socket for an accept) */
	__u32 pid;          /* 24 bind: tgid; 0 otherwise */
	__u32 tid;          /* 28 */
	__u32 uid;          /* 32 */
	__u32 gid;          /* 36 */
	__u8 kind;          /* 40 INBOUND_* */
	__u8 family;        /* 41 4 or 6 */
	__u16 sock_type;    /* 42 SOCK_*; SOCK_STREAM for listen and accept */
	__u16 protocol;     /* 44 IPPROTO_*; IPPROTO_TCP for listen and accept */
	__u16 local_port;   /* 46 host order */
	__u16 remote_port;  /* 48 host order; accept only */
	__u16 pad;          /* 50 */
	__u32 pad2;         /* 52 */
	__u8 local[16];     /* 56 network order (4 bytes for family 4) */
	__u8 remote[16];    /* 72 accept only */
	char comm[TASK_COMM_LEN]; /* 88 bind only */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} inbound_events SEC(".maps");

static __always_inline struct inbound_rec *inbound_reserve(void)
{
	struct inbound_rec *r = bpf_ringbuf_reserve(&inbound_events, sizeof(*r), 0);
	if (!r) {
		count_loss(LOSS_INBOUND_RINGBUF);
		return 0;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->ktime_ns = bpf_ktime_get_ns();
	return r;
}

static __always_inline void inbound_bind(struct bpf_sock *sk, int v6)
{
	struct inbound_rec *r = inbound_reserve();
	if (!r)
		return;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->cookie = bpf_get_socket_cookie(sk);
	r->pid = pid_tgid >> 32;
	r->tid = (__u32)pid_tgid;
	r->uid = (__u32)uid_gid;
	r->gid = uid_gid >> 32;
	r->kind = INBOUND_BIND;
	r->sock_type = sk->type;
	r->protocol = sk->protocol;
	r->local_port = sk->src_port;
	/* post_bind4 may read src_ip4 only, post_bind6 src_ip6 only. */
	if (v6) {
		r->family = 6;
		__u32 a[4];
		a[0] = sk->src_ip6[0];
		a[1] = sk->src_ip6[1];
		a[2] = sk->src_ip6[2];
		a[3] = sk->src_ip6[3];
		__builtin_memcpy(r->local, a, 16);
	} else {
		r->family = 4;
		__u32 a = sk->src_ip4;
		__builtin_memcpy(r->local, &a, 4);
	}
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	bpf_ringbuf_submit(r, RB_FLAGS);
}

SEC("cgroup/post_bind4")
int inbound_bind4(struct bpf_sock *sk)
{
	inbound_bind(sk, 0);
	return 1;
}

SEC("cgroup/post_bind6")
int inbound_bind6(struct bpf_sock *sk)
{
	inbound_bind(sk, 1);
	return 1;
}

SEC("sockops")
int inbound_sockops(struct bpf_sock_ops *ctx)
{
	__u32 op = ctx->op;
	if (op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_TCP_LISTEN_CB &&
	    op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	__u32 family = ctx->family;
	if (family != AF_INET && family != AF_INET6)
		return 1;
	struct inbound_rec *r = inbound_reserve();
	if (!r)
		return 1;
	r->cookie = bpf_get_socket_cookie(ctx);
	r->kind = op == BPF_SOCK_OPS_TCP_LISTEN_CB	      ? INBOUND_LISTEN :
		  op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB ? INBOUND_CONNECTED :
							      INBOUND_ACCEPT;
	/* Both ends are known once a handshake completed. */
	int both = r->kind != INBOUND_LISTEN;
	r->sock_type = 1; /* SOCK_STREAM */
	r->protocol = IPPROTO_TCP;
	r->local_port = ctx->local_port;
	if (both) {
		/* Network order in the upper 16 bits (as the kernel has always done on little-endian
		 * hosts), or in the lower 16 bits: a port is never 0 here, so either way it is found. */
		__u32 rp = ctx->remote_port;
		r->remote_port = rp > 0xffff ? (__u16)__builtin_bswap32(rp) : __builtin_bswap16((__u16)rp);
	}
	if (family == AF_INET) {
		r->family = 4;
		__u32 a = ctx->local_ip4;
		__builtin_memcpy(r->local, &a, 4);
		if (both) {
			a = ctx->remote_ip4;
			__builtin_memcpy(r->remote, &a, 4);
		}
	} else {
		r->family = 6;
		__u32 a[4];
		a[0] = ctx->local_ip6[0];
		a[1] = ctx->local_ip6[1];
		a[2] = ctx->local_ip6[2];
		a[3] = ctx->local_ip6[3];
		__builtin_memcpy(r->local, a, 16);
		if (both) {
			a[0] = ctx->remote_ip6[0];
			a[1] = ctx->remote_ip6[1];
			a[2] = ctx->remote_ip6[2];
			a[3] = ctx->remote_ip6[3];
			__builtin_memcpy(r->remote, a, 16);
		}
	}
	bpf_ringbuf_submit(r, RB_FLAGS);
	return 1;
}
