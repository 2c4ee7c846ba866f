/* Unit tests of the portable core: CRC, COBS, framing, golden vectors, scheduler, filter,
 * debounce and command handling. Prints "N passed, M failed" and exits nonzero on failure. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/cobs.h"
#include "../core/crc16.h"
#include "../core/debounce.h"
#include "../core/filter.h"
#include "../core/gripper.h"
#include "../core/protocol.h"
#include "../core/sched.h"
#include "fake_hal.h"

static int passed, failed, current_ok;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            printf("  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                  \
            current_ok = 0;                                                            \
        }                                                                              \
    } while (0)

static void run(const char *name, void (*fn)(void))
{
    current_ok = 1;
    fake_reset();
    fn();
    if (current_ok) {
        passed++;
        printf("ok   %s\n", name);
    } else {
        failed++;
        printf("FAIL %s\n", name);
    }
}

/* ---- helpers ---- */

/* Decode every frame in the fake TX buffer into msgs; returns the count. */
static size_t tx_messages(gp_msg_t *msgs, size_t cap)
{
    gp_rx_t rx;
    uint8_t payload[GP_MAX_PAYLOAD], version;
    size_t i, n, count = 0;
    gp_rx_init(&rx);
    for (i = 0; i < fake_tx_len; i++) {
        if (gp_rx_feed(&rx, fake_tx[i], payload, sizeof payload, &n) == 1 && count < cap) {
            if (gp_decode_payload(payload, n, &msgs[count], &version) == GP_ERR_NONE) {
                count++;
            }
        }
    }
    fake_tx_len = 0;
    return count;
}

static void push_msg(const gp_msg_t *m, uint8_t version)
{
    uint8_t f[GP_MAX_FRAME];
    size_t n = gp_encode_frame(m, version, f, sizeof f);
    fake_rx_push(f, n);
}

static gp_app_t app;

static void start_app(void)
{
    gp_config_t cfg;
    gp_config_default(&cfg);
    gp_app_init(&app, &cfg);
}

/* ---- CRC / COBS / framing ---- */

static void test_crc_check_value(void)
{
    CHECK(gp_crc16((const uint8_t *)"123456789", 9) == 0x31C3u);
    CHECK(gp_crc16(NULL, 0) == 0);
}

static void test_cobs_roundtrip(void)
{
    uint8_t in[600], enc[GP_COBS_MAX(600)], dec[600];
    size_t sizes[] = { 0, 1, 253, 254, 255, 300, 508, 600 };
    size_t s, i, n, m;
    int ok;
    for (s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (i = 0; i < sizes[s]; i++) {
            in[i] = (uint8_t)((i % 7 == 3) ? 0 : (i * 31 + 1));
        }
        n = gp_cobs_encode(in, sizes[s], enc, sizeof enc);
        CHECK(n > 0);
        CHECK(memchr(enc, 0, n) == NULL);
        m = gp_cobs_decode(enc, n, dec, sizeof dec, &ok);
        CHECK(ok && m == sizes[s] && memcmp(in, dec, m) == 0);
    }
    /* A long run without zeros crosses the 254-byte block boundary. */
    memset(in, 0xAB, 600);
    n = gp_cobs_encode(in, 600, enc, sizeof enc);
    m = gp_cobs_decode(enc, n, dec, sizeof dec, &ok);
    CHECK(ok && m == 600 && memcmp(in, dec, 600) == 0);
}

static void test_cobs_rejects_malformed(void)
{
    uint8_t bad1[] = { 0x05, 0x11, 0x22 }; /* claims 4 data bytes, has 2 */
    uint8_t bad2[] = { 0x02, 0x00 };       /* zero inside a frame */
    uint8_t out[16];
    int ok;
    gp_cobs_decode(bad1, sizeof bad1, out, sizeof out, &ok);
    CHECK(!ok);
    gp_cobs_decode(bad2, sizeof bad2, out, sizeof out, &ok);
    CHECK(!ok);
}

static void test_rx_resyncs_after_garbage_and_bad_crc(void)
{
    gp_msg_t m, got;
    gp_rx_t rx;
    uint8_t f[GP_MAX_FRAME], stream[256], payload[GP_MAX_PAYLOAD], version;
    size_t n, len = 0, i, plen;
    int frames = 0, crc_drops = 0;
    memset(&m, 0, sizeof m);
    m.type = GP_PING;
    m.u.ping.id = 77;
    m.u.ping.host_ns = 123456789ull;
    n = gp_encode_frame(&m, GP_PROTO_VERSION, f, sizeof f);
    /* garbage, a frame with a flipped byte, then two good frames */
    stream[len++] = 0x13; stream[len++] = 0x37; stream[len++] = 0x00;
    memcpy(stream + len, f, n); stream[len + 3] ^= 0x40; len += n;
    memcpy(stream + len, f, n); len += n;
    memcpy(stream + len, f, n); len += n;
    gp_rx_init(&rx);
    for (i = 0; i < len; i++) {
        int r = gp_rx_feed(&rx, stream[i], payload, sizeof payload, &plen);
        if (r == 1) {
            CHECK(gp_decode_payload(payload, plen, &got, &version) == GP_ERR_NONE);
            CHECK(got.type == GP_PING && got.u.ping.id == 77 && got.u.ping.host_ns == 123456789ull);
            frames++;
        } else if (r == -GP_ERR_CRC) {
            crc_drops++;
        }
    }
    CHECK(frames == 2);
    CHECK(crc_drops == 1);
}

static void test_rx_drops_oversized_frame(void)
{
    gp_rx_t rx;
    uint8_t payload[GP_MAX_PAYLOAD];
    size_t i, plen;
    int r = 0;
    gp_rx_init(&rx);
    for (i = 0; i < 500; i++) {
        r = gp_rx_feed(&rx, 0x41, payload, sizeof payload, &plen);
        CHECK(r == 0);
    }
    r = gp_rx_feed(&rx, 0, payload, sizeof payload, &plen);
    CHECK(r == -GP_ERR_FRAMING);
    CHECK(rx.framing_errors == 1);
}

static void test_decode_rejects_bad_length_and_type(void)
{
    gp_msg_t m;
    uint8_t version;
    uint8_t short_rate[] = { 1, GP_SET_RATE, 0xC8 };
    uint8_t unknown[] = { 1, 0x7E };
    CHECK(gp_decode_payload(short_rate, sizeof short_rate, &m, &version) == GP_ERR_LENGTH);
    CHECK(gp_decode_payload(unknown, sizeof unknown, &m, &version) == GP_ERR_UNKNOWN_TYPE);
    CHECK(gp_body_size(GP_SAMPLE) == 33u);
    CHECK(gp_body_size(GP_HELLO) == 33u);
    CHECK(gp_body_size(GP_PONG) == 28u);
}

/* ---- golden vectors (shared with the Python tests) ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t parse_hex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (hexval(s[0]) >= 0 && hexval(s[1]) >= 0 && n < cap) {
        out[n++] = (uint8_t)(hexval(s[0]) * 16 + hexval(s[1]));
        s += 2;
    }
    return n;
}

static const gp_field_t *find_field(uint8_t type, const char *name)
{
    size_t n, i;
    const gp_field_t *f = gp_fields(type, &n);
    for (i = 0; f != NULL && i < n; i++) {
        if (strcmp(f[i].name, name) == 0) {
            return &f[i];
        }
    }
    return NULL;
}

static void test_golden_vectors(void)
{
    FILE *fp = fopen(GOLDEN_PATH, "r");
    char line[1024];
    int vectors = 0;
    CHECK(fp != NULL);
    if (fp == NULL) {
        return;
    }
    while (fgets(line, sizeof line, fp)) {
        char *bar1, *bar2, *tok, *save = NULL;
        gp_msg_t want, got;
        uint8_t frame[GP_MAX_FRAME], expect[GP_MAX_FRAME], payload[GP_MAX_PAYLOAD], version = 0;
        size_t n, elen, plen = 0, i, nf;
        unsigned fields_seen = 0;
        gp_rx_t rx;
        const gp_field_t *table;
        if (line[0] == '#' || line[0] == '\n') {
            continue;
        }
        bar1 = strchr(line, '|');
        bar2 = bar1 ? strchr(bar1 + 1, '|') : NULL;
        CHECK(bar2 != NULL);
        if (bar2 == NULL) {
            continue;
        }
        *bar2 = '\0';
        memset(&want, 0, sizeof want);
        for (tok = strtok_r(bar1 + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
            char *eq = strchr(tok, '=');
            const gp_field_t *f;
            int64_t v;
            if (eq == NULL) {
                continue;
            }
            *eq = '\0';
            v = eq[1] == '-' ? (int64_t)strtoll(eq + 1, NULL, 0) : (int64_t)strtoull(eq + 1, NULL, 0);
            if (strcmp(tok, "type") == 0) {
                want.type = (uint8_t)v;
            } else if (strcmp(tok, "version") == 0) {
                version = (uint8_t)v;
            } else if ((f = find_field(want.type, tok)) != NULL) {
                gp_field_set(&want, f, v);
                fields_seen++;
            } else {
                printf("  unknown field %s in golden vector\n", tok);
                CHECK(0);
            }
        }
        table = gp_fields(want.type, &nf);
        CHECK(table != NULL && fields_seen == nf);
        elen = parse_hex(bar2 + 1 + strspn(bar2 + 1, " "), expect, sizeof expect);
        /* encode: fields -> identical bytes */
        n = gp_encode_frame(&want, version, frame, sizeof frame);
        CHECK(n == elen && memcmp(frame, expect, n) == 0);
        /* decode: bytes -> identical fields */
        gp_rx_init(&rx);
        for (i = 0; i < elen; i++) {
            if (gp_rx_feed(&rx, expect[i], payload, sizeof payload, &plen) == 1) {
                CHECK(i == elen - 1);
            }
        }
        memset(&got, 0, sizeof got);
        CHECK(gp_decode_payload(payload, plen, &got, &version) == GP_ERR_NONE);
        CHECK(got.type == want.type);
        for (i = 0; i < nf; i++) {
            CHECK(gp_field_get(&got, &table[i]) == gp_field_get(&want, &table[i]));
        }
        vectors++;
    }
    fclose(fp);
    CHECK(vectors >= 10);
}

/* ---- scheduler ---- */

static void test_sched_no_drift_at_awkward_rate(void)
{
    gp_sched_t s;
    uint32_t skipped, k;
    uint64_t t = 5;
    gp_sched_start(&s, 300, 5); /* 3333.33 us period: rounding must not accumulate */
    for (k = 0; k < 3000; k++) {
        t = gp_sched_deadline(&s);
        CHECK(gp_sched_due(&s, t, &skipped) == 1 && skipped == 0);
        CHECK(gp_sched_due(&s, t, &skipped) == 0);
    }
    /* after 3000 ticks at 300 Hz the next deadline is exactly 10 s after the start */
    CHECK(gp_sched_deadline(&s) == 5u + 10000000u);
}

static void test_sched_skips_when_late(void)
{
    gp_sched_t s;
    uint32_t skipped;
    gp_sched_start(&s, 200, 0);
    CHECK(gp_sched_due(&s, 0, &skipped) == 1 && skipped == 0);
    CHECK(gp_sched_due(&s, 4999, &skipped) == 0);
    /* stall for 22 ms: deadlines 5,10,15 ms were missed; we run once for the 20 ms slot */
    CHECK(gp_sched_due(&s, 22000, &skipped) == 1 && skipped == 3);
    CHECK(gp_sched_deadline(&s) == 25000u);
    CHECK(s.skipped == 3);
}

/* ---- filter / debounce / jaw ---- */

static void test_lowpass_step_response(void)
{
    gp_lowpass_t f;
    int i;
    int32_t y = 0;
    memset(&f, 0, sizeof f);
    gp_lowpass_config(&f, 150, 200); /* 15 Hz at 200 Hz: alpha ~ 0.32 */
    CHECK(f.alpha_q16 > 20000u && f.alpha_q16 < 22000u);
    CHECK(gp_lowpass_step(&f, 0) == 0);
    y = gp_lowpass_step(&f, 1000000);
    CHECK(y > 300000 && y < 340000);
    for (i = 0; i < 60; i++) {
        y = gp_lowpass_step(&f, 1000000);
    }
    CHECK(y > 999000 && y <= 1000000);
    gp_lowpass_config(&f, 0, 200); /* disabled: pass-through */
    CHECK(gp_lowpass_step(&f, -5) == -5);
}

static void test_debounce_ignores_chatter(void)
{
    gp_debounce_t d;
    gp_debounce_init(&d, 3);
    CHECK(gp_debounce_step(&d, 1) == 0);
    CHECK(gp_debounce_step(&d, 0) == 0); /* bounce resets the count */
    CHECK(gp_debounce_step(&d, 1) == 0);
    CHECK(gp_debounce_step(&d, 1) == 0);
    CHECK(gp_debounce_step(&d, 1) == 1);
    CHECK(gp_debounce_step(&d, 3) == 1);
    CHECK(gp_debounce_step(&d, 2) == 1);
    CHECK(gp_debounce_step(&d, 2) == 3); /* bit 1 pressed after 3 reads... */
    CHECK(gp_debounce_step(&d, 2) == 2); /* ...bit 0 released one read later: separate counts */
}

static void test_jaw_angle_wraps_shortest_way(void)
{
    gp_config_t cfg;
    gp_config_default(&cfg);
    cfg.jaw_closed_raw = 4000;
    CHECK(gp_jaw_urad(&cfg, 4000) == 0);
    CHECK(gp_jaw_urad(&cfg, 4000 + 1024 - 4096) == 1570796); /* a quarter turn across the wrap */
    cfg.jaw_direction = -1;
    CHECK(gp_jaw_urad(&cfg, 3000) == 1533980);
}

/* ---- command handling ---- */

static void test_identify_returns_hello(void)
{
    gp_msg_t m, out[4];
    start_app();
    m.type = GP_IDENTIFY;
    push_msg(&m, GP_PROTO_VERSION);
    fake_now_us = 1234;
    gp_app_poll(&app);
    CHECK(tx_messages(out, 4) == 1);
    CHECK(out[0].type == GP_HELLO);
    CHECK(out[0].u.hello.proto == GP_PROTO_VERSION && out[0].u.hello.rate_hz == 200);
    CHECK(out[0].u.hello.serial == 0x47525031u && out[0].u.hello.sensors == 3);
    CHECK(out[0].u.hello.device_us == 1234 && out[0].u.hello.streaming == 0);
}

static void test_ping_echoes_with_receive_time(void)
{
    gp_msg_t m, out[4];
    start_app();
    m.type = GP_PING;
    m.u.ping.id = 99;
    m.u.ping.host_ns = 42000000000ull;
    push_msg(&m, GP_PROTO_VERSION);
    fake_now_us = 777777;
    gp_app_poll(&app);
    CHECK(tx_messages(out, 4) == 1);
    CHECK(out[0].type == GP_PONG && out[0].u.pong.id == 99);
    CHECK(out[0].u.pong.host_ns == 42000000000ull);
    CHECK(out[0].u.pong.rx_us == 777777 && out[0].u.pong.tx_us == 777777);
}

static void test_stream_rate_and_samples(void)
{
    gp_msg_t m, out[64];
    size_t n, i;
    uint32_t k;
    start_app();
    m.type = GP_SET_RATE;
    m.u.set_rate.rate_hz = 100;
    push_msg(&m, GP_PROTO_VERSION);
    m.type = GP_STREAM;
    m.u.stream.enable = 1;
    push_msg(&m, GP_PROTO_VERSION);
    fake_angle_raw = 2048; /* 1024 counts from closed = 90 degrees */
    fake_inputs = 0x5;     /* trigger + button 1 (bit 2 -> buttons bit 1) */
    for (k = 0; k < 100000; k += 1000) { /* 100 ms of 1 kHz polling */
        fake_now_us = 10000 + k;
        gp_app_poll(&app);
    }
    n = tx_messages(out, 64);
    CHECK(n == 12); /* two acks + samples at 0,10..90 ms */
    CHECK(out[0].type == GP_ACK && out[0].u.ack.cmd == GP_SET_RATE && out[0].u.ack.status == GP_OK);
    CHECK(out[1].type == GP_ACK && out[1].u.ack.cmd == GP_STREAM);
    for (i = 2; i < n; i++) {
        CHECK(out[i].type == GP_SAMPLE);
        CHECK(out[i].u.sample.seq == i - 2);
        CHECK(out[i].u.sample.t_us == 10000 + (i - 2) * 10000u);
        CHECK(out[i].u.sample.jaw_raw == 2048);
        CHECK(out[i].u.sample.jaw_urad == 1570796); /* filter starts at the first reading */
        CHECK(out[i].u.sample.gyro[0] == 0x0201 && out[i].u.sample.accel[0] == 0x0807);
    }
    CHECK(out[n - 1].u.sample.trigger == 1 && out[n - 1].u.sample.buttons == 2);
    CHECK(out[2].u.sample.trigger == 0); /* still debouncing at the first tick */
    /* stop: no more samples */
    m.u.stream.enable = 0;
    push_msg(&m, GP_PROTO_VERSION);
    for (k = 0; k < 50000; k += 1000) {
        fake_now_us = 200000 + k;
        gp_app_poll(&app);
    }
    n = tx_messages(out, 64);
    CHECK(n == 1 && out[0].type == GP_ACK && out[0].u.ack.cmd == GP_STREAM);
}

static void test_bad_arguments_are_refused(void)
{
    gp_msg_t m, out[8];
    start_app();
    m.type = GP_SET_RATE;
    m.u.set_rate.rate_hz = 0;
    push_msg(&m, GP_PROTO_VERSION);
    m.u.set_rate.rate_hz = 5000;
    push_msg(&m, GP_PROTO_VERSION);
    m.type = GP_SET_LED;
    m.u.set_led.mode = 9;
    push_msg(&m, GP_PROTO_VERSION);
    m.type = GP_SET_FILTER;
    m.u.set_filter.cutoff_dhz = 1500; /* 150 Hz at 200 Hz sampling: above Nyquist */
    push_msg(&m, GP_PROTO_VERSION);
    m.type = GP_SAMPLE; /* a device->host message sent to the device */
    memset(&m.u.sample, 0, sizeof m.u.sample);
    push_msg(&m, GP_PROTO_VERSION);
    gp_app_poll(&app);
    CHECK(tx_messages(out, 8) == 5);
    CHECK(out[0].u.ack.status == GP_BAD_ARG && out[1].u.ack.status == GP_BAD_ARG);
    CHECK(out[2].u.ack.cmd == GP_SET_LED && out[2].u.ack.status == GP_BAD_ARG);
    CHECK(out[3].u.ack.cmd == GP_SET_FILTER && out[3].u.ack.status == GP_BAD_ARG);
    CHECK(out[4].u.ack.cmd == GP_SAMPLE && out[4].u.ack.status == GP_UNKNOWN_CMD);
    CHECK(app.cfg.rate_hz == 200 && app.led_mode == GP_LED_BLINK_SLOW);
}

static void test_foreign_version_and_corruption_reported(void)
{
    gp_msg_t m, out[8];
    uint8_t f[GP_MAX_FRAME];
    size_t n;
    start_app();
    m.type = GP_IDENTIFY;
    push_msg(&m, 2);
    n = gp_encode_frame(&m, GP_PROTO_VERSION, f, sizeof f);
    f[2] ^= 0x02; /* corrupt the type byte (f[1] is the version, 0x01 -> 0x00 would split the frame) */
    fake_rx_push(f, n);
    gp_app_poll(&app);
    m.type = GP_STREAM;
    m.u.stream.enable = 1;
    push_msg(&m, 2);
    gp_app_poll(&app);
    CHECK(tx_messages(out, 8) == 3);
    /* IDENTIFY of any version gets a HELLO (in our version) so the host can explain a mismatch */
    CHECK(out[0].type == GP_HELLO && out[0].u.hello.proto == GP_PROTO_VERSION);
    CHECK(out[1].type == GP_ERROR && out[1].u.error.code == GP_ERR_CRC && out[1].u.error.detail == 1);
    CHECK(out[2].type == GP_ERROR && out[2].u.error.code == GP_ERR_VERSION && out[2].u.error.detail == 1);
    CHECK(app.streaming == 0);
}

static void test_sensor_faults_flagged(void)
{
    gp_msg_t m, out[8];
    start_app();
    m.type = GP_STREAM;
    m.u.stream.enable = 1;
    push_msg(&m, GP_PROTO_VERSION);
    fake_encoder_ok = 0;
    fake_imu_ok = 0;
    gp_app_poll(&app);
    CHECK(tx_messages(out, 8) == 2);
    CHECK(out[1].type == GP_SAMPLE);
    CHECK(out[1].u.sample.flags == (GP_FLAG_ENCODER_FAULT | GP_FLAG_IMU_FAULT));
    CHECK(out[1].u.sample.jaw_raw == 0xFFFFu);
}

static void test_late_tick_flagged_once(void)
{
    gp_msg_t m, out[8];
    start_app();
    m.type = GP_STREAM;
    m.u.stream.enable = 1;
    push_msg(&m, GP_PROTO_VERSION);
    gp_app_poll(&app);             /* sample 0 at t=1000 */
    fake_now_us = 1000 + 17000;     /* 5 ms period: 3 deadlines missed */
    gp_app_poll(&app);
    fake_now_us = 1000 + 20000;
    gp_app_poll(&app);
    CHECK(tx_messages(out, 8) == 4);
    CHECK(out[1].u.sample.flags == 0);
    CHECK(out[2].u.sample.flags == GP_FLAG_LATE && out[2].u.sample.seq == 1);
    CHECK(out[3].u.sample.flags == 0 && out[3].u.sample.seq == 2);
}

int main(void)
{
    run("crc_check_value", test_crc_check_value);
    run("cobs_roundtrip", test_cobs_roundtrip);
    run("cobs_rejects_malformed", test_cobs_rejects_malformed);
    run("rx_resyncs_after_garbage_and_bad_crc", test_rx_resyncs_after_garbage_and_bad_crc);
    run("rx_drops_oversized_frame", test_rx_drops_oversized_frame);
    run("decode_rejects_bad_length_and_type", test_decode_rejects_bad_length_and_type);
    run("golden_vectors", test_golden_vectors);
    run("sched_no_drift_at_awkward_rate", test_sched_no_drift_at_awkward_rate);
    run("sched_skips_when_late", test_sched_skips_when_late);
    run("lowpass_step_response", test_lowpass_step_response);
    run("debounce_ignores_chatter", test_debounce_ignores_chatter);
    run("jaw_angle_wraps_shortest_way", test_jaw_angle_wraps_shortest_way);
    run("identify_returns_hello", test_identify_returns_hello);
    run("ping_echoes_with_receive_time", test_ping_echoes_with_receive_time);
    run("stream_rate_and_samples", test_stream_rate_and_samples);
    run("bad_arguments_are_refused", test_bad_arguments_are_refused);
    run("foreign_version_and_corruption_reported", test_foreign_version_and_corruption_reported);
    run("sensor_faults_flagged", test_sensor_faults_flagged);
    run("late_tick_flagged_once", test_late_tick_flagged_once);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
