#include "protocol.h"

#include "crc16.h"

#define F(type_, member, kind) { #member, kind, (uint16_t)offsetof(gp_msg_t, u.type_.member) }
#define FA(type_, member, idx, name, kind) { name, kind, (uint16_t)offsetof(gp_msg_t, u.type_.member[idx]) }

static const gp_field_t ping_f[] = { F(ping, id, GP_U32), F(ping, host_ns, GP_U64) };
static const gp_field_t set_rate_f[] = { F(set_rate, rate_hz, GP_U16) };
static const gp_field_t set_led_f[] = { F(set_led, mode, GP_U8) };
static const gp_field_t stream_f[] = { F(stream, enable, GP_U8) };
static const gp_field_t set_filter_f[] = { F(set_filter, cutoff_dhz, GP_U16) };
static const gp_field_t hello_f[] = {
    F(hello, fw_major, GP_U8), F(hello, fw_minor, GP_U8), F(hello, fw_patch, GP_U8),
    F(hello, proto, GP_U8), F(hello, serial, GP_U32), F(hello, rate_hz, GP_U16),
    F(hello, streaming, GP_U8), F(hello, sensors, GP_U8), F(hello, enc_counts, GP_U16),
    F(hello, jaw_closed_raw, GP_U16), F(hello, jaw_open_urad, GP_I32), F(hello, accel_fs_g, GP_U8),
    F(hello, gyro_fs_dps, GP_U16), F(hello, cutoff_dhz, GP_U16), F(hello, device_us, GP_U64)
};
static const gp_field_t sample_f[] = {
    F(sample, seq, GP_U32), F(sample, t_us, GP_U64), F(sample, jaw_raw, GP_U16),
    F(sample, jaw_urad, GP_I32), F(sample, trigger, GP_U8), F(sample, buttons, GP_U8),
    FA(sample, accel, 0, "ax", GP_I16), FA(sample, accel, 1, "ay", GP_I16), FA(sample, accel, 2, "az", GP_I16),
    FA(sample, gyro, 0, "gx", GP_I16), FA(sample, gyro, 1, "gy", GP_I16), FA(sample, gyro, 2, "gz", GP_I16),
    F(sample, flags, GP_U8)
};
static const gp_field_t pong_f[] = {
    F(pong, id, GP_U32), F(pong, host_ns, GP_U64), F(pong, rx_us, GP_U64), F(pong, tx_us, GP_U64)
};
static const gp_field_t ack_f[] = { F(ack, cmd, GP_U8), F(ack, status, GP_U8) };
static const gp_field_t error_f[] = { F(error, code, GP_U8), F(error, detail, GP_U32) };

#define N(a) (sizeof(a) / sizeof((a)[0]))

const gp_field_t *gp_fields(uint8_t type, size_t *n)
{
    switch (type) {
    case GP_IDENTIFY: *n = 0; return hello_f; /* empty body; any non-NULL pointer marks "known" */
    case GP_PING: *n = N(ping_f); return ping_f;
    case GP_SET_RATE: *n = N(set_rate_f); return set_rate_f;
    case GP_SET_LED: *n = N(set_led_f); return set_led_f;
    case GP_STREAM: *n = N(stream_f); return stream_f;
    case GP_SET_FILTER: *n = N(set_filter_f); return set_filter_f;
    case GP_HELLO: *n = N(hello_f); return hello_f;
    case GP_SAMPLE: *n = N(sample_f); return sample_f;
    case GP_PONG: *n = N(pong_f); return pong_f;
    case GP_ACK: *n = N(ack_f); return ack_f;
    case GP_ERROR: *n = N(error_f); return error_f;
    default: *n = 0; return NULL;
    }
}

int gp_type_known(uint8_t type)
{
    size_t n;
    return gp_fields(type, &n) != NULL;
}

static size_t kind_size(uint8_t kind)
{
    switch (kind) {
    case GP_U8: return 1;
    case GP_U16: case GP_I16: return 2;
    case GP_U32: case GP_I32: return 4;
    default: return 8;
    }
}

size_t gp_body_size(uint8_t type)
{
    size_t n, i, total = 0;
    const gp_field_t *f = gp_fields(type, &n);
    if (f == NULL) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        total += kind_size(f[i].kind);
    }
    return total;
}

int64_t gp_field_get(const gp_msg_t *m, const gp_field_t *f)
{
    const uint8_t *p = (const uint8_t *)m + f->offset;
    switch (f->kind) {
    case GP_U8: return *(const uint8_t *)p;
    case GP_U16: return *(const uint16_t *)(const void *)p;
    case GP_U32: return *(const uint32_t *)(const void *)p;
    case GP_U64: return (int64_t)*(const uint64_t *)(const void *)p;
    case GP_I16: return *(const int16_t *)(const void *)p;
    default: return *(const int32_t *)(const void *)p;
    }
}

void gp_field_set(gp_msg_t *m, const gp_field_t *f, int64_t v)
{
    uint8_t *p = (uint8_t *)m + f->offset;
    switch (f->kind) {
    case GP_U8: *(uint8_t *)p = (uint8_t)v; break;
    case GP_U16: *(uint16_t *)(void *)p = (uint16_t)v; break;
    case GP_U32: *(uint32_t *)(void *)p = (uint32_t)v; break;
    case GP_U64: *(uint64_t *)(void *)p = (uint64_t)v; break;
    case GP_I16: *(int16_t *)(void *)p = (int16_t)v; break;
    default: *(int32_t *)(void *)p = (int32_t)v; break;
    }
}

size_t gp_encode_payload(const gp_msg_t *m, uint8_t version, uint8_t *out, size_t cap)
{
    size_t n, i, o = 2;
    const gp_field_t *f = gp_fields(m->type, &n);
    if (f == NULL || cap < 2u + gp_body_size(m->type)) {
        return 0;
    }
    out[0] = version;
    out[1] = m->type;
    for (i = 0; i < n; i++) {
        uint64_t v = (uint64_t)gp_field_get(m, &f[i]);
        size_t b, sz = kind_size(f[i].kind);
        for (b = 0; b < sz; b++) {
            out[o++] = (uint8_t)(v >> (8u * b));
        }
    }
    return o;
}

int gp_decode_payload(const uint8_t *p, size_t n, gp_msg_t *m, uint8_t *version_out)
{
    size_t nf, i, o = 2;
    const gp_field_t *f;
    if (n < 2) {
        return GP_ERR_LENGTH;
    }
    *version_out = p[0];
    m->type = p[1];
    f = gp_fields(p[1], &nf);
    if (f == NULL) {
        return GP_ERR_UNKNOWN_TYPE;
    }
    if (n != 2u + gp_body_size(p[1])) {
        return GP_ERR_LENGTH;
    }
    for (i = 0; i < nf; i++) {
        size_t b, sz = kind_size(f[i].kind);
        uint64_t v = 0;
        int64_t sv;
        for (b = 0; b < sz; b++) {
            v |= (uint64_t)p[o++] << (8u * b);
        }
        /* Sign-extend the signed kinds so gp_field_set stores the right value. */
        if (f[i].kind == GP_I16) {
            sv = (int16_t)(uint16_t)v;
        } else if (f[i].kind == GP_I32) {
            sv = (int32_t)(uint32_t)v;
        } else {
            sv = (int64_t)v;
        }
        gp_field_set(m, &f[i], sv);
    }
    return GP_ERR_NONE;
}

size_t gp_frame(const uint8_t *payload, size_t n, uint8_t *out, size_t cap)
{
    uint8_t tmp[GP_MAX_PAYLOAD + 2u];
    uint16_t crc;
    size_t i, len;
    if (n > GP_MAX_PAYLOAD) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        tmp[i] = payload[i];
    }
    crc = gp_crc16(payload, n);
    tmp[n] = (uint8_t)crc;
    tmp[n + 1u] = (uint8_t)(crc >> 8);
    len = gp_cobs_encode(tmp, n + 2u, out, cap);
    if (len == 0 || len >= cap) {
        return 0;
    }
    out[len] = 0;
    return len + 1u;
}

size_t gp_encode_frame(const gp_msg_t *m, uint8_t version, uint8_t *out, size_t cap)
{
    uint8_t payload[GP_MAX_PAYLOAD];
    size_t n = gp_encode_payload(m, version, payload, sizeof payload);
    return n == 0 ? 0 : gp_frame(payload, n, out, cap);
}

void gp_rx_init(gp_rx_t *rx)
{
    rx->len = 0;
    rx->overflow = 0;
    rx->crc_errors = 0;
    rx->framing_errors = 0;
}

int gp_rx_feed(gp_rx_t *rx, uint8_t byte, uint8_t *out, size_t cap, size_t *n_out)
{
    uint8_t dec[GP_MAX_FRAME];
    size_t n;
    int ok;
    uint16_t crc;
    if (byte != 0) {
        if (rx->len < sizeof rx->buf) {
            rx->buf[rx->len++] = byte;
        } else {
            rx->overflow = 1; /* keep swallowing until the next delimiter */
        }
        return 0;
    }
    if (rx->len == 0) {
        return 0; /* back-to-back delimiters are legal padding */
    }
    if (rx->overflow) {
        rx->len = 0;
        rx->overflow = 0;
        rx->framing_errors++;
        return -GP_ERR_FRAMING;
    }
    n = gp_cobs_decode(rx->buf, rx->len, dec, sizeof dec, &ok);
    rx->len = 0;
    if (!ok || n < 4u || n - 2u > cap) {
        rx->framing_errors++;
        return -GP_ERR_FRAMING;
    }
    crc = (uint16_t)(dec[n - 2u] | (uint16_t)(dec[n - 1u] << 8));
    if (crc != gp_crc16(dec, n - 2u)) {
        rx->crc_errors++;
        return -GP_ERR_CRC;
    }
    for (ok = 0; (size_t)ok < n - 2u; ok++) {
        out[ok] = dec[ok];
    }
    *n_out = n - 2u;
    return 1;
}
