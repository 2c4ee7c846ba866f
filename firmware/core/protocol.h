/* Wire protocol of the handheld gripper (see firmware/PROTOCOL.md).
 *
 * Frame = COBS(payload || crc16_le(payload)) || 0x00, payload = version u8 | type u8 | body.
 * Bodies are fixed little-endian layouts described by one field table per message type, so the
 * encoder, the decoder and the golden-vector tests all read the same description. */
#ifndef GP_PROTOCOL_H
#define GP_PROTOCOL_H
#include <stddef.h>
#include <stdint.h>

#include "cobs.h"

#define GP_PROTO_VERSION 1u
#define GP_MAX_PAYLOAD 48u
#define GP_MAX_FRAME (GP_COBS_MAX(GP_MAX_PAYLOAD + 2u) + 1u)

enum gp_type {
    /* host -> device */
    GP_IDENTIFY = 0x01,
    GP_PING = 0x02,
    GP_SET_RATE = 0x03,
    GP_SET_LED = 0x04,
    GP_STREAM = 0x05,
    GP_SET_FILTER = 0x06,
    /* device -> host */
    GP_HELLO = 0x81,
    GP_SAMPLE = 0x82,
    GP_PONG = 0x83,
    GP_ACK = 0x84,
    GP_ERROR = 0x85
};

enum gp_status { GP_OK = 0, GP_BAD_ARG = 1, GP_UNKNOWN_CMD = 2 };

enum gp_err {
    GP_ERR_NONE = 0,
    GP_ERR_CRC = 1,
    GP_ERR_FRAMING = 2,
    GP_ERR_UNKNOWN_TYPE = 3,
    GP_ERR_LENGTH = 4,
    GP_ERR_SENSOR = 5,
    GP_ERR_VERSION = 6,
    GP_ERR_OVERRUN = 7
};

enum gp_led_mode { GP_LED_OFF = 0, GP_LED_ON = 1, GP_LED_BLINK_SLOW = 2, GP_LED_BLINK_FAST = 3 };

/* Sensor-health bits in HELLO.sensors and fault bits in SAMPLE.flags. */
#define GP_SENSOR_ENCODER 0x01u
#define GP_SENSOR_IMU 0x02u
#define GP_FLAG_ENCODER_FAULT 0x01u
#define GP_FLAG_IMU_FAULT 0x02u
#define GP_FLAG_LATE 0x04u /* the scheduler skipped deadlines before this sample */

typedef struct { uint32_t id; uint64_t host_ns; } gp_ping_t;
typedef struct { uint16_t rate_hz; } gp_set_rate_t;
typedef struct { uint8_t mode; } gp_set_led_t;
typedef struct { uint8_t enable; } gp_stream_t;
typedef struct { uint16_t cutoff_dhz; } gp_set_filter_t;

typedef struct {
    uint8_t fw_major, fw_minor, fw_patch, proto;
    uint32_t serial;
    uint16_t rate_hz;
    uint8_t streaming, sensors;
    uint16_t enc_counts, jaw_closed_raw;
    int32_t jaw_open_urad;
    uint8_t accel_fs_g;
    uint16_t gyro_fs_dps, cutoff_dhz;
    uint64_t device_us;
} gp_hello_t;

typedef struct {
    uint32_t seq;
    uint64_t t_us;
    uint16_t jaw_raw;
    int32_t jaw_urad;
    uint8_t trigger, buttons;
    int16_t accel[3], gyro[3];
    uint8_t flags;
} gp_sample_t;

typedef struct { uint32_t id; uint64_t host_ns, rx_us, tx_us; } gp_pong_t;
typedef struct { uint8_t cmd, status; } gp_ack_t;
typedef struct { uint8_t code; uint32_t detail; } gp_error_t;

typedef struct {
    uint8_t type;
    union {
        gp_ping_t ping;
        gp_set_rate_t set_rate;
        gp_set_led_t set_led;
        gp_stream_t stream;
        gp_set_filter_t set_filter;
        gp_hello_t hello;
        gp_sample_t sample;
        gp_pong_t pong;
        gp_ack_t ack;
        gp_error_t error;
    } u;
} gp_msg_t;

/* Field table: one row per wire field, in wire order. */
enum gp_kind { GP_U8, GP_U16, GP_U32, GP_U64, GP_I16, GP_I32 };
typedef struct {
    const char *name;
    uint8_t kind;
    uint16_t offset; /* offsetof(gp_msg_t, ...) */
} gp_field_t;

/* Returns the field table of a type (count in *n), or NULL for an unknown type. */
const gp_field_t *gp_fields(uint8_t type, size_t *n);
size_t gp_body_size(uint8_t type); /* 0 for unknown types (IDENTIFY also has an empty body) */
int gp_type_known(uint8_t type);

/* Field access by table row (used by the codec and by tests reading golden vectors). */
int64_t gp_field_get(const gp_msg_t *m, const gp_field_t *f);
void gp_field_set(gp_msg_t *m, const gp_field_t *f, int64_t v);

/* Payload <-> message. encode returns the payload length (0 if cap is too small). */
size_t gp_encode_payload(const gp_msg_t *m, uint8_t version, uint8_t *out, size_t cap);
/* decode returns GP_ERR_NONE, GP_ERR_UNKNOWN_TYPE or GP_ERR_LENGTH. The version byte is only
 * reported in *version_out: the caller decides what a foreign version means. */
int gp_decode_payload(const uint8_t *p, size_t n, gp_msg_t *m, uint8_t *version_out);

/* Payload -> complete frame with CRC, COBS and the 0x00 delimiter. Returns 0 if cap is too small. */
size_t gp_frame(const uint8_t *payload, size_t n, uint8_t *out, size_t cap);
/* Message -> frame in one step. */
size_t gp_encode_frame(const gp_msg_t *m, uint8_t version, uint8_t *out, size_t cap);

/* Streaming receiver: feed bytes one at a time. */
typedef struct {
    uint8_t buf[GP_MAX_FRAME];
    size_t len;
    uint8_t overflow;
    uint32_t crc_errors, framing_errors;
} gp_rx_t;

void gp_rx_init(gp_rx_t *rx);
/* Returns 1 with a checked payload in out (length in n_out) when a frame completes, 0 when more bytes are
 * needed, or -GP_ERR_CRC / -GP_ERR_FRAMING for a frame that was dropped. */
int gp_rx_feed(gp_rx_t *rx, uint8_t byte, uint8_t *out, size_t cap, size_t *n_out);

#endif
