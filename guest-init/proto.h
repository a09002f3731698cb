/* SPDX-License-Identifier: MIT */
/*
 * agentvm guest agent protocol: shared by the host (src/) and the guest (guest-init/).
 *
 * A byte stream (virtio-serial port or vsock) carries frames. Every frame is a fixed 24-byte
 * little-endian header followed by `len` payload bytes:
 *
 *   u32 magic  "AVM1"   u16 version   u16 type   u32 flags   u32 id   u32 len   u32 crc
 *
 * crc is CRC32 (IEEE, as zlib) over the header with crc = 0, then the payload. `id` names the
 * request a frame belongs to (an EXEC's id is carried by its STDIN/STDOUT/STDERR/SIGNAL/EXIT
 * frames), so several commands can run at once over one channel.
 *
 * The decoder never trusts the stream: a frame with a bad magic, version, length or CRC is
 * reported as an error and skipped, and the decoder resynchronises on the next magic, so one bad
 * frame never kills the channel. This header and proto.c depend on nothing but libc, so the
 * static guest PID 1 links them as they are.
 */
#ifndef AGENTVM_PROTO_H
#define AGENTVM_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define AVM_PROTO_MAGIC 0x314d5641u /* "AVM1" read as little-endian bytes */
#define AVM_PROTO_VERSION 1
#define AVM_PROTO_HDR_SIZE 24
/* Hard limit on one payload; output is streamed in chunks well below it. */
#define AVM_PROTO_MAX_PAYLOAD (256u * 1024u)
/* Chunk size the sender uses for STDOUT/STDERR/STDIN data. */
#define AVM_PROTO_CHUNK (32u * 1024u)
/* Limits on an EXEC request, checked on both sides. */
#define AVM_PROTO_MAX_ARGS 4096
#define AVM_PROTO_MAX_ENV 4096
/* The virtio-serial port name the guest looks for. */
#define AVM_AGENT_PORT_NAME "org.agentvm.agent"

enum avm_msg_type {
	AVM_MSG_READY = 1,    /* guest -> host, once per boot; payload: TLVs (AVM_TAG_*) */
	AVM_MSG_EXEC = 2,     /* host -> guest; payload: TLVs */
	AVM_MSG_STDIN = 3,    /* host -> guest; data; an empty payload is EOF */
	AVM_MSG_STDOUT = 4,   /* guest -> host; data; an empty payload is EOF */
	AVM_MSG_STDERR = 5,   /* guest -> host; data; an empty payload is EOF */
	AVM_MSG_SIGNAL = 6,   /* host -> guest; payload: u32 signal number */
	AVM_MSG_EXIT = 7,     /* guest -> host; payload: struct avm_exit_info */
	AVM_MSG_PING = 8,     /* host -> guest; payload echoed in PONG */
	AVM_MSG_PONG = 9,     /* guest -> host */
	AVM_MSG_ERROR = 10,   /* either way; payload: u32 errno, then a UTF-8 message */
	AVM_MSG_POWEROFF = 11, /* host -> guest; the guest syncs and powers off */
	AVM_MSG_SYNC = 12,    /* host -> guest; payload: TLVs (time, entropy, hostname) */
	AVM_MSG_SYNC_DONE = 13, /* guest -> host */
	AVM_MSG_STATS = 14,   /* host -> guest; no payload: how much memory the guest uses */
	AVM_MSG_STATS_REPLY = 15, /* guest -> host; payload: TLVs (AVM_TAG_MEM_*) */
	AVM_MSG_TYPE_MAX = 15,
};

/* TLV tags used in READY, EXEC and SYNC payloads: u16 tag, u32 len, len bytes. */
enum avm_tag {
	AVM_TAG_ARG = 1,        /* EXEC: one argv element (repeated, in order) */
	AVM_TAG_ENV = 2,        /* EXEC: one "KEY=VALUE" (repeated) */
	AVM_TAG_CWD = 3,        /* EXEC: working directory */
	AVM_TAG_TIMEOUT_MS = 4, /* EXEC: u32; 0 = none; the guest kills the command's group */
	AVM_TAG_UID = 5,        /* EXEC: u32 */
	AVM_TAG_STDIN = 6,      /* EXEC: u32, 1 = stdin is a pipe fed by STDIN frames, 0 = /dev/null */
	AVM_TAG_GID = 7,        /* EXEC: u32 */
	AVM_TAG_BUILTIN = 8,    /* EXEC: u32 1 = argv[0] names an agent builtin (tar-out, tar-in:
				 * `agentvm cp`), run as a process of its own like any command */
	AVM_TAG_ROOT = 9,       /* EXEC: absolute dir the command is chrooted into (a container's
				 * root file system on a share: the containerd shim) */
	AVM_TAG_TIME_NS = 20,   /* SYNC: u64 CLOCK_REALTIME nanoseconds */
	AVM_TAG_ENTROPY = 21,   /* SYNC: bytes to credit to the guest RNG */
	AVM_TAG_HOSTNAME = 22,  /* SYNC: hostname */
	AVM_TAG_NET_ADDR = 23,  /* SYNC: eth0's IPv4 address "A.B.C.D/PREFIX" */
	AVM_TAG_NET_GW = 24,    /* SYNC: default gateway "A.B.C.D" */
	AVM_TAG_NET_DNS = 25,   /* SYNC: resolver "A.B.C.D" (written to /etc/resolv.conf) */
	AVM_TAG_NET_MAC = 26,   /* SYNC: eth0's new MAC, 6 bytes */
	AVM_TAG_BOOT_ARGS = 27, /* SYNC to a boot template's clone (agentvm.template=1 on its
				 * cmdline): the agentvm.root/disk/share words its cold boot would
				 * have had on the kernel cmdline, applied once, after the restore */
	AVM_TAG_VERSION = 30,   /* READY: agent version string */
	AVM_TAG_BOOT_NS = 31,   /* READY: u64 CLOCK_BOOTTIME at READY, nanoseconds */
	AVM_TAG_MEM_TOTAL = 40, /* STATS_REPLY: u64 bytes, /proc/meminfo MemTotal */
	AVM_TAG_MEM_AVAILABLE = 41, /* STATS_REPLY: u64 bytes, /proc/meminfo MemAvailable */
};

/* How an EXEC ended. */
enum avm_exit_kind {
	AVM_EXIT_CODE = 0,      /* exited; code = exit status */
	AVM_EXIT_SIGNAL = 1,    /* killed by signal `code` */
	AVM_EXIT_TIMEOUT = 2,   /* the guest-side timeout fired and killed it */
	AVM_EXIT_START_FAILED = 3, /* never ran; code = errno of the failed execve/chdir/... */
	AVM_EXIT_OOM = 4,       /* killed (signal `code`) by the guest kernel's OOM killer */
};

/* EXIT payload, little-endian, packed on the wire as 48 bytes. */
struct avm_exit_info {
	uint32_t kind; /* enum avm_exit_kind */
	int32_t code;
	uint64_t duration_us;
	uint64_t utime_us;
	uint64_t stime_us;
	uint64_t maxrss_kb;
	uint64_t reserved;
};
#define AVM_EXIT_INFO_SIZE 48

struct avm_frame_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t flags;
	uint32_t id;
	uint32_t len;
	uint32_t crc;
};

/* CRC32 (IEEE 802.3, reflected, as zlib's crc32()); chain calls by passing the previous value. */
uint32_t avm_crc32(uint32_t crc, const void *buf, size_t len);

/*
 * Encode a frame header for `payload` into out[AVM_PROTO_HDR_SIZE]. Returns 0, or -EMSGSIZE
 * when len exceeds AVM_PROTO_MAX_PAYLOAD. The caller writes out[] and then the payload.
 */
int avm_frame_encode_hdr(uint8_t out[AVM_PROTO_HDR_SIZE], uint16_t type, uint32_t flags,
			 uint32_t id, const void *payload, uint32_t len);

/*
 * Streaming decoder. Feed it bytes as they arrive; take frames out with avm_decoder_next().
 * The decoder owns its buffer; frames returned point into it and stay valid until the next
 * call to avm_decoder_feed() or avm_decoder_next().
 */
struct avm_decoder {
	uint8_t *buf;
	size_t len; /* bytes held */
	size_t cap;
	size_t off; /* start of unconsumed data */
	uint64_t bad_frames; /* frames rejected so far */
};

enum avm_decode_result {
	AVM_DECODE_FRAME = 1, /* *hdr and *payload describe one good frame */
	AVM_DECODE_NEED_MORE = 0,
	/* A bad frame was skipped; *hdr holds what was read (id may be garbage) and *why says why.
	 * Call again: the decoder has already moved past it. */
	AVM_DECODE_BAD = -1,
};

void avm_decoder_init(struct avm_decoder *d);
void avm_decoder_release(struct avm_decoder *d);
/* Append bytes. Returns 0 or -ENOMEM. */
int avm_decoder_feed(struct avm_decoder *d, const void *data, size_t len);
int avm_decoder_next(struct avm_decoder *d, struct avm_frame_hdr *hdr, const uint8_t **payload,
		     const char **why);

/* TLV building: append to a growable buffer owned by the caller. */
struct avm_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};
void avm_buf_release(struct avm_buf *b);
int avm_buf_put(struct avm_buf *b, const void *data, size_t len);
int avm_tlv_put(struct avm_buf *b, uint16_t tag, const void *val, uint32_t len);
int avm_tlv_put_str(struct avm_buf *b, uint16_t tag, const char *s);
int avm_tlv_put_u32(struct avm_buf *b, uint16_t tag, uint32_t v);
int avm_tlv_put_u64(struct avm_buf *b, uint16_t tag, uint64_t v);

/*
 * TLV iteration over a received payload. Returns 1 and fills tag/val/len for each record, 0 at
 * the clean end, -EBADMSG when a record runs past the payload.
 */
struct avm_tlv_iter {
	const uint8_t *p;
	size_t left;
};
void avm_tlv_iter_init(struct avm_tlv_iter *it, const uint8_t *payload, size_t len);
int avm_tlv_next(struct avm_tlv_iter *it, uint16_t *tag, const uint8_t **val, uint32_t *len);
/* Decode fixed-size values; -EBADMSG on a wrong length. */
int avm_tlv_u32(const uint8_t *val, uint32_t len, uint32_t *out);
int avm_tlv_u64(const uint8_t *val, uint32_t len, uint64_t *out);

/* EXIT payload (de)serialisation; decode returns -EBADMSG on a wrong size. */
void avm_exit_info_encode(const struct avm_exit_info *in, uint8_t out[AVM_EXIT_INFO_SIZE]);
int avm_exit_info_decode(const uint8_t *p, size_t len, struct avm_exit_info *out);

/* The guest's memory (STATS_REPLY), bytes. */
struct avm_guest_stats {
	uint64_t mem_total;
	uint64_t mem_available;
};
/*
 * STATS_REPLY payload: encode appends its TLVs to b (0 or -ENOMEM); decode takes the known tags,
 * skips others, and returns -EBADMSG for a malformed payload or one without MemTotal, or one
 * whose MemAvailable exceeds MemTotal.
 */
int avm_guest_stats_encode(struct avm_buf *b, const struct avm_guest_stats *s);
int avm_guest_stats_decode(const uint8_t *p, size_t len, struct avm_guest_stats *out);
/*
 * MemTotal and MemAvailable (bytes) out of /proc/meminfo text (len bytes, need not end in NUL).
 * 0, or -EBADMSG when MemTotal is missing.
 */
int avm_meminfo_parse(const char *text, size_t len, struct avm_guest_stats *out);

/* Little-endian helpers. */
static inline void avm_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void avm_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void avm_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t avm_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t avm_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}
static inline uint64_t avm_get_le64(const uint8_t *p)
{
	return (uint64_t)avm_get_le32(p) | ((uint64_t)avm_get_le32(p + 4) << 32);
}

const char *avm_msg_type_name(uint16_t type);

#endif
