/*
 * walk_packed: an outside reader of `iovtui run --dump-ram DIR` for the
 * virtio 1.1 packed virtqueue, built against the system's <linux/virtio_ring.h>
 * (struct vring_packed_desc, struct vring_packed_desc_event, the AVAIL/USED
 * bit numbers and the event flags come from there, not from iovtui).
 *
 *   cc -std=c11 -Wall -Werror -o walk_packed walk_packed.c
 *   ./walk_packed DIR          (DIR/layout.json, DIR/<vm>.ram)
 *
 * For every queue of kind "virtio-packed" it checks, from the bytes alone:
 *  - every slot's flags hold only AVAIL, USED and WRITE;
 *  - the lap bits: slot i's AVAIL bit is the driver's avail wrap counter W
 *    for i < P and its inverse from P on (P = the driver's next slot), so
 *    the wrap counter and the next index can be read off the ring;
 *  - AVAIL/USED: the slots made available and not yet used (AVAIL != USED)
 *    are one run ending at P - 1 (the device takes them in order), the
 *    device's next slot and its wrap counter follow; every used slot has
 *    AVAIL == USED; RX slots made available carry WRITE, used ones do not;
 *    TX slots never carry WRITE; ids are below the ring size and no id is
 *    outstanding twice;
 *  - both event areas hold ENABLE, DISABLE or DESC (with an offset inside
 *    the ring);
 *  - every used RX buffer with a length holds virtio_net_hdr + an Ethernet
 *    frame addressed to its VM (destination MAC = the VM's, or a group
 *    address).
 * Any failure prints "FAIL: ..." and exits 1; a good dump prints one line
 * per queue and exits 0.
 */
#define _DEFAULT_SOURCE
#include <ctype.h>
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/virtio_ring.h>

static int failures;

static void fail(const char *fmt, ...)
{
	va_list ap;
	if (++failures > 10) {
		if (failures == 11) puts("FAIL: ... (further failures not shown)");
		return;
	}
	va_start(ap, fmt);
	fputs("FAIL: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("FAIL: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
	exit(1);
}

/* ---- a very small JSON reader (objects, arrays, strings, numbers, literals) ---- */
enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
struct jval {
	enum jtype t;
	double num;
	char *str;
	int n;                  /* items (array) or members (object) */
	char **keys;
	struct jval **items;
};

static const char *jp;

static void jws(void) { while (*jp && isspace((unsigned char)*jp)) jp++; }

static struct jval *jnew(enum jtype t)
{
	struct jval *v = calloc(1, sizeof *v);
	if (!v) die("out of memory");
	v->t = t;
	return v;
}

static char *jstring(void)
{
	if (*jp != '"') die("layout.json: expected a string at '%.20s'", jp);
	jp++;
	size_t cap = 32, len = 0;
	char *s = malloc(cap);
	while (*jp && *jp != '"') {
		char c = *jp++;
		if (c == '\\') {
			c = *jp++;
			if (c == 'u') { jp += 4; c = '?'; }
			else if (c == 'n') c = '\n';
			else if (c == 't') c = '\t';
		}
		if (len + 2 > cap) s = realloc(s, cap *= 2);
		s[len++] = c;
	}
	if (*jp != '"') die("layout.json: unterminated string");
	jp++;
	s[len] = 0;
	return s;
}

static struct jval *jparse(void)
{
	jws();
	struct jval *v;
	if (*jp == '{' || *jp == '[') {
		int obj = *jp == '{';
		char close = obj ? '}' : ']';
		v = jnew(obj ? J_OBJ : J_ARR);
		jp++;
		jws();
		while (*jp && *jp != close) {
			v->items = realloc(v->items, (v->n + 1) * sizeof *v->items);
			v->keys = realloc(v->keys, (v->n + 1) * sizeof *v->keys);
			v->keys[v->n] = NULL;
			if (obj) {
				jws();
				v->keys[v->n] = jstring();
				jws();
				if (*jp++ != ':') die("layout.json: expected ':'");
			}
			v->items[v->n++] = jparse();
			jws();
			if (*jp == ',') jp++;
			jws();
		}
		if (*jp != close) die("layout.json: unterminated %s", obj ? "object" : "array");
		jp++;
	} else if (*jp == '"') {
		v = jnew(J_STR);
		v->str = jstring();
	} else if (!strncmp(jp, "true", 4) || !strncmp(jp, "false", 5)) {
		v = jnew(J_BOOL);
		v->num = *jp == 't';
		jp += *jp == 't' ? 4 : 5;
	} else if (!strncmp(jp, "null", 4)) {
		v = jnew(J_NULL);
		jp += 4;
	} else {
		char *end;
		v = jnew(J_NUM);
		v->num = strtod(jp, &end);
		if (end == jp) die("layout.json: unexpected '%.20s'", jp);
		jp = end;
	}
	return v;
}

static struct jval *jget(struct jval *o, const char *key)
{
	if (!o || o->t != J_OBJ) return NULL;
	for (int i = 0; i < o->n; i++)
		if (!strcmp(o->keys[i], key)) return o->items[i];
	return NULL;
}

static uint64_t jnum(struct jval *o, const char *key)
{
	struct jval *v = jget(o, key);
	if (!v || v->t != J_NUM) die("layout.json: queue has no number \"%s\"", key);
	return (uint64_t)v->num;
}

static const char *jstr(struct jval *o, const char *key)
{
	struct jval *v = jget(o, key);
	if (!v || v->t != J_STR) die("layout.json: missing string \"%s\"", key);
	return v->str;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f) die("cannot open %s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc(n + 1);
	if (!buf || fread(buf, 1, n, f) != (size_t)n) die("cannot read %s", path);
	buf[n] = 0;
	fclose(f);
	*len = n;
	return buf;
}

/* ---- the walk ---- */
#define AVAIL_BIT(f) (((f) >> VRING_PACKED_DESC_F_AVAIL) & 1)
#define USED_BIT(f) (((f) >> VRING_PACKED_DESC_F_USED) & 1)
#define KNOWN_FLAGS ((1u << VRING_PACKED_DESC_F_AVAIL) | (1u << VRING_PACKED_DESC_F_USED) | VRING_DESC_F_WRITE)

static int parse_mac(const char *s, unsigned char mac[6])
{
	unsigned int b[6];
	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) return -1;
	for (int i = 0; i < 6; i++) mac[i] = (unsigned char)b[i];
	return 0;
}

static void check_event(const char *who, const char *what, const unsigned char *ram, size_t ramlen,
			uint64_t gpa, unsigned num)
{
	if (gpa + sizeof(struct vring_packed_desc_event) > ramlen) {
		fail("%s: %s event area at 0x%llx is outside guest RAM", who, what, (unsigned long long)gpa);
		return;
	}
	struct vring_packed_desc_event e;
	memcpy(&e, ram + gpa, sizeof e);
	unsigned flags = le16toh(e.flags), off = le16toh(e.off_wrap);
	if (flags != VRING_PACKED_EVENT_FLAG_ENABLE && flags != VRING_PACKED_EVENT_FLAG_DISABLE &&
	    flags != VRING_PACKED_EVENT_FLAG_DESC)
		fail("%s: %s event flags %u is none of ENABLE, DISABLE, DESC", who, what, flags);
	if (flags == VRING_PACKED_EVENT_FLAG_DESC && (off & ~(1u << VRING_PACKED_EVENT_F_WRAP_CTR)) >= num)
		fail("%s: %s event DESC offset %u is outside the ring of %u", who, what,
		     off & ~(1u << VRING_PACKED_EVENT_F_WRAP_CTR), num);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DUMP_DIR\n", argv[0]);
		return 2;
	}
	char path[4096];
	size_t len;
	snprintf(path, sizeof path, "%s/layout.json", argv[1]);
	jp = slurp(path, &len);
	struct jval *layout = jparse();
	struct jval *vms = jget(layout, "vms"), *queues = jget(layout, "queues");
	if (!vms || vms->t != J_ARR || !queues || queues->t != J_ARR) die("layout.json: no vms / queues arrays");
	int walked = 0;
	for (int qi = 0; qi < queues->n; qi++) {
		struct jval *q = queues->items[qi];
		struct jval *kind = jget(q, "kind");
		if (!kind || kind->t != J_STR || strcmp(kind->str, "virtio-packed")) continue;
		const char *vmname = jstr(q, "vm"), *qname = jstr(q, "name");
		struct jval *vm = NULL;
		for (int i = 0; i < vms->n; i++)
			if (!strcmp(jstr(vms->items[i], "name"), vmname)) vm = vms->items[i];
		if (!vm) die("layout.json: queue names VM %s, which is not listed", vmname);
		unsigned char mac[6];
		if (parse_mac(jstr(vm, "mac"), mac)) die("layout.json: bad MAC for %s", vmname);
		char who[128];
		snprintf(who, sizeof who, "%s %s", vmname, qname);
		int rx = !strcmp(qname, "rx");
		unsigned num = (unsigned)jnum(q, "size");
		uint64_t desc = jnum(q, "desc_gpa"), drv = jnum(q, "driver_event_gpa"), dev = jnum(q, "device_event_gpa");
		unsigned hdr = (unsigned)jnum(q, "hdr_len");
		if (jget(q, "avail_gpa") || jget(q, "used_gpa")) fail("%s: a packed queue lists avail_gpa / used_gpa", who);
		if (num < 1 || num > 32768) die("%s: size %u outside 1..32768", who, num);

		snprintf(path, sizeof path, "%s/%s.ram", argv[1], vmname);
		size_t ramlen;
		unsigned char *ram = (unsigned char *)slurp(path, &ramlen);
		if (ramlen != jnum(vm, "ram_bytes")) fail("%s: %s.ram is %zu bytes, layout says %llu", who, vmname,
							    ramlen, (unsigned long long)jnum(vm, "ram_bytes"));
		if (desc % 16 || desc + 16ull * num > ramlen) die("%s: descriptor ring at 0x%llx does not fit", who,
								   (unsigned long long)desc);
		struct vring_packed_desc *ring = (struct vring_packed_desc *)(ram + desc);

		/* 1. flags hold only the known bits; the lap bits give the driver's wrap counter and next slot */
		unsigned lap0 = AVAIL_BIT(le16toh(ring[0].flags)), p = num;
		for (unsigned i = 0; i < num; i++) {
			unsigned f = le16toh(ring[i].flags);
			if (f & ~KNOWN_FLAGS) fail("%s: slot %u flags 0x%04x hold bits other than AVAIL, USED, WRITE", who, i, f);
			if (p == num && AVAIL_BIT(f) != lap0) p = i;
			else if (p != num && AVAIL_BIT(f) == lap0)
				fail("%s: slot %u's AVAIL bit %u breaks the laps: slots 0..%u have %u, from %u on the "
				     "inverse is expected (one wrap counter)", who, i, AVAIL_BIT(f), p - 1, lap0, p);
		}
		unsigned drv_wrap = lap0, drv_next = p % num;
		if (p == num) drv_wrap ^= 1;       /* every slot is in the same lap: the counter flipped at the end */

		/* 2. the available run ends at P - 1; before it every slot is used (AVAIL == USED) */
		unsigned avail = 0;
		for (unsigned k = 0; k < num; k++) {
			unsigned i = (drv_next + num - 1 - k) % num;
			unsigned f = le16toh(ring[i].flags);
			if (AVAIL_BIT(f) == USED_BIT(f)) break;
			avail++;
		}
		unsigned dev_next = (drv_next + num - avail) % num;
		unsigned dev_wrap = avail ? AVAIL_BIT(le16toh(ring[dev_next].flags)) : drv_wrap;
		static unsigned char seen[32768];
		memset(seen, 0, sizeof seen);
		unsigned used = 0, frames = 0, never = 0;
		for (unsigned k = 0; k < num; k++) {
			unsigned i = (drv_next + k) % num;
			unsigned f = le16toh(ring[i].flags), id = le16toh(ring[i].id);
			unsigned dlen = le32toh(ring[i].len);
			uint64_t addr = le64toh(ring[i].addr);
			int is_avail = k >= num - avail;
			if (!is_avail && AVAIL_BIT(f) != USED_BIT(f))
				fail("%s: slot %u is available (AVAIL %u, USED %u) but lies outside the run the device has "
				     "not reached (slots %u..%u): the device used a later slot first", who, i, AVAIL_BIT(f),
				     USED_BIT(f), dev_next, (drv_next + num - 1) % num);
			if (f == 0 && addr == 0 && dlen == 0 && id == 0) {
				never++;
				continue;
			}
			if (id >= num) fail("%s: slot %u holds id %u, not below the ring size %u", who, i, id, num);
			if (is_avail) {
				if (id < num && seen[id]++) fail("%s: id %u is outstanding twice (slot %u)", who, id, i);
				if (rx && !(f & VRING_DESC_F_WRITE)) fail("%s: available RX slot %u lacks WRITE", who, i);
			} else {
				used++;
				if (f & VRING_DESC_F_WRITE) fail("%s: used slot %u still has WRITE: the device writes flags "
								 "AVAIL|USED only", who, i);
			}
			if (!rx && (f & VRING_DESC_F_WRITE)) fail("%s: TX slot %u has WRITE", who, i);
			/* 3. a used RX buffer with a length holds a frame for this VM */
			if (rx && !is_avail && dlen) {
				if (dlen < hdr + 14 || addr + dlen > ramlen) {
					fail("%s: used slot %u: buffer 0x%llx len %u cannot hold header + frame", who, i,
					     (unsigned long long)addr, dlen);
					continue;
				}
				const unsigned char *dst = ram + addr + hdr;
				if (memcmp(dst, mac, 6) && !(dst[0] & 1))
					fail("%s: used slot %u (id %u): the frame at 0x%llx is for "
					     "%02x:%02x:%02x:%02x:%02x:%02x, not %s", who, i, id,
					     (unsigned long long)(addr + hdr), dst[0], dst[1], dst[2], dst[3], dst[4], dst[5],
					     jstr(vm, "mac"));
				frames++;
			}
		}
		check_event(who, "driver", ram, ramlen, drv, num);
		check_event(who, "device", ram, ramlen, dev, num);
		printf("%s: %u slots · driver next %u wrap %u · device next %u wrap %u · %u available, %u used, "
		       "%u never written · %u RX frames for %s\n", who, num, drv_next, drv_wrap, dev_next, dev_wrap,
		       avail, used, never, frames, jstr(vm, "mac"));
		free(ram);
		walked++;
	}
	if (!walked) die("no virtio-packed queue in %s/layout.json", argv[1]);
	if (failures) {
		printf("%d check(s) failed\n", failures);
		return 1;
	}
	return 0;
}
