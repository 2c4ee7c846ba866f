#include "gripper.h"

#include "as5600.h"
#include "hal.h"
#include "imu.h"

void gp_config_default(gp_config_t *cfg)
{
    cfg->rate_hz = GP_DEFAULT_RATE_HZ;
    cfg->cutoff_dhz = GP_DEFAULT_CUTOFF_DHZ;
    cfg->jaw_closed_raw = 1024;
    cfg->jaw_open_urad = 1570796; /* 90 degrees of jaw travel */
    cfg->jaw_direction = 1;
    cfg->debounce_ticks = 3;
    cfg->proto = GP_PROTO_VERSION;
}

static void send(gp_app_t *app, const gp_msg_t *m)
{
    uint8_t frame[GP_MAX_FRAME];
    size_t n = gp_encode_frame(m, app->cfg.proto, frame, sizeof frame);
    if (n) {
        hal_serial_write(frame, n);
    }
}

static void send_ack(gp_app_t *app, uint8_t cmd, uint8_t status)
{
    gp_msg_t m;
    m.type = GP_ACK;
    m.u.ack.cmd = cmd;
    m.u.ack.status = status;
    send(app, &m);
}

static void send_error(gp_app_t *app, uint8_t code, uint32_t detail)
{
    gp_msg_t m;
    m.type = GP_ERROR;
    m.u.error.code = code;
    m.u.error.detail = detail;
    send(app, &m);
}

static void send_hello(gp_app_t *app)
{
    gp_msg_t m;
    gp_hello_t *h = &m.u.hello;
    m.type = GP_HELLO;
    h->fw_major = GP_FW_MAJOR;
    h->fw_minor = GP_FW_MINOR;
    h->fw_patch = GP_FW_PATCH;
    h->proto = app->cfg.proto;
    h->serial = hal_serial_number();
    h->rate_hz = (uint16_t)app->cfg.rate_hz;
    h->streaming = app->streaming;
    h->sensors = app->sensors_ok;
    h->enc_counts = AS5600_COUNTS;
    h->jaw_closed_raw = app->cfg.jaw_closed_raw;
    h->jaw_open_urad = app->cfg.jaw_open_urad;
    h->accel_fs_g = IMU_ACCEL_FS_G;
    h->gyro_fs_dps = IMU_GYRO_FS_DPS;
    h->cutoff_dhz = app->cfg.cutoff_dhz;
    h->device_us = hal_time_us();
    send(app, &m);
}

int32_t gp_jaw_urad(const gp_config_t *cfg, uint16_t raw)
{
    int32_t d = ((int32_t)raw - (int32_t)cfg->jaw_closed_raw) & (int32_t)(AS5600_COUNTS - 1u);
    if (d >= (int32_t)(AS5600_COUNTS / 2u)) {
        d -= (int32_t)AS5600_COUNTS;
    }
    return (int32_t)(((int64_t)d * cfg->jaw_direction * 6283185) / (int64_t)AS5600_COUNTS);
}

void gp_app_init(gp_app_t *app, const gp_config_t *cfg)
{
    app->cfg = *cfg;
    gp_rx_init(&app->rx);
    gp_lowpass_config(&app->jaw_lp, cfg->cutoff_dhz, cfg->rate_hz);
    app->jaw_lp.primed = 0;
    gp_debounce_init(&app->inputs, cfg->debounce_ticks);
    app->streaming = 0;
    app->led_mode = GP_LED_BLINK_SLOW; /* powered, not streaming */
    app->seq = 0;
    app->late_pending = 0;
    app->ticks = 0;
    app->sensors_ok = 0;
    if (imu_init() == 0) {
        app->sensors_ok |= GP_SENSOR_IMU;
    }
    {
        uint16_t raw;
        if (as5600_read(&raw) == 0) {
            app->sensors_ok |= GP_SENSOR_ENCODER;
        }
    }
    gp_sched_start(&app->sched, cfg->rate_hz, hal_time_us());
}

void gp_app_tick(gp_app_t *app, uint32_t skipped)
{
    gp_msg_t m;
    gp_sample_t *s = &m.u.sample;
    uint16_t raw = 0;
    uint8_t in;
    m.type = GP_SAMPLE;
    s->flags = 0;
    s->t_us = hal_time_us(); /* stamp at acquisition, before the bus reads */
    if (as5600_read(&raw) == 0) {
        s->jaw_raw = raw;
        s->jaw_urad = gp_lowpass_step(&app->jaw_lp, gp_jaw_urad(&app->cfg, raw));
    } else {
        s->jaw_raw = 0xFFFFu;
        s->jaw_urad = (int32_t)(app->jaw_lp.y_q16 / 65536);
        s->flags |= GP_FLAG_ENCODER_FAULT;
    }
    if (imu_read(s->accel, s->gyro) != 0) {
        int i;
        for (i = 0; i < 3; i++) {
            s->accel[i] = 0;
            s->gyro[i] = 0;
        }
        s->flags |= GP_FLAG_IMU_FAULT;
    }
    in = gp_debounce_step(&app->inputs, hal_inputs_raw());
    s->trigger = (uint8_t)(in & 1u);
    s->buttons = (uint8_t)(in >> 1);
    app->ticks++;
    app->late_pending += skipped;
    if (!app->streaming) {
        return;
    }
    if (app->late_pending) {
        s->flags |= GP_FLAG_LATE;
        app->late_pending = 0;
    }
    s->seq = app->seq++;
    send(app, &m);
}

static void set_rate(gp_app_t *app, uint32_t rate)
{
    app->cfg.rate_hz = rate;
    gp_lowpass_config(&app->jaw_lp, app->cfg.cutoff_dhz, rate);
    gp_sched_start(&app->sched, rate, hal_time_us());
}

void gp_app_handle(gp_app_t *app, const uint8_t *payload, size_t n, uint64_t rx_us)
{
    gp_msg_t m, r;
    uint8_t version = 0;
    int err = gp_decode_payload(payload, n, &m, &version);
    if (n >= 1 && payload[0] != app->cfg.proto) {
        /* IDENTIFY is answered whatever its version byte, so a host of another protocol version
         * can still learn which firmware this is and tell its user what to flash. */
        if (n == 2 && payload[1] == GP_IDENTIFY) {
            send_hello(app);
        } else {
            send_error(app, GP_ERR_VERSION, app->cfg.proto);
        }
        return;
    }
    if (err != GP_ERR_NONE) {
        send_error(app, (uint8_t)err, n >= 2 ? payload[1] : 0u);
        return;
    }
    switch (m.type) {
    case GP_IDENTIFY:
        send_hello(app);
        break;
    case GP_PING:
        r.type = GP_PONG;
        r.u.pong.id = m.u.ping.id;
        r.u.pong.host_ns = m.u.ping.host_ns;
        r.u.pong.rx_us = rx_us;
        r.u.pong.tx_us = hal_time_us();
        send(app, &r);
        break;
    case GP_SET_RATE:
        if (m.u.set_rate.rate_hz == 0 || m.u.set_rate.rate_hz > GP_MAX_RATE_HZ) {
            send_ack(app, m.type, GP_BAD_ARG);
        } else {
            set_rate(app, m.u.set_rate.rate_hz);
            send_ack(app, m.type, GP_OK);
        }
        break;
    case GP_SET_LED:
        if (m.u.set_led.mode > GP_LED_BLINK_FAST) {
            send_ack(app, m.type, GP_BAD_ARG);
        } else {
            app->led_mode = m.u.set_led.mode;
            send_ack(app, m.type, GP_OK);
        }
        break;
    case GP_STREAM:
        if (m.u.stream.enable > 1) {
            send_ack(app, m.type, GP_BAD_ARG);
            break;
        }
        /* Ack first so the host sees the ack before the first sample. */
        send_ack(app, m.type, GP_OK);
        if (m.u.stream.enable && !app->streaming) {
            gp_sched_start(&app->sched, app->cfg.rate_hz, hal_time_us());
            app->late_pending = 0;
        }
        app->streaming = m.u.stream.enable;
        break;
    case GP_SET_FILTER:
        /* A cutoff at or above Nyquist is no filter at all: refuse it rather than mislead. */
        if ((uint32_t)m.u.set_filter.cutoff_dhz * 2u > app->cfg.rate_hz * 10u) {
            send_ack(app, m.type, GP_BAD_ARG);
        } else {
            app->cfg.cutoff_dhz = m.u.set_filter.cutoff_dhz;
            gp_lowpass_config(&app->jaw_lp, app->cfg.cutoff_dhz, app->cfg.rate_hz);
            send_ack(app, m.type, GP_OK);
        }
        break;
    default:
        send_ack(app, m.type, GP_UNKNOWN_CMD); /* a device->host type sent to the device */
        break;
    }
}

static void led_update(gp_app_t *app, uint64_t now)
{
    int on;
    switch (app->led_mode) {
    case GP_LED_ON: on = 1; break;
    case GP_LED_BLINK_SLOW: on = (now / 500000u) % 2u == 0; break;
    case GP_LED_BLINK_FAST: on = (now / 100000u) % 2u == 0; break;
    default: on = 0; break;
    }
    hal_led_set(on);
}

void gp_app_poll(gp_app_t *app)
{
    uint8_t buf[64], payload[GP_MAX_PAYLOAD];
    size_t n, i, plen;
    uint32_t skipped;
    uint64_t now;
    while ((n = hal_serial_read(buf, sizeof buf)) > 0) {
        for (i = 0; i < n; i++) {
            int r = gp_rx_feed(&app->rx, buf[i], payload, sizeof payload, &plen);
            if (r == 1) {
                gp_app_handle(app, payload, plen, hal_time_us());
            } else if (r < 0) {
                send_error(app, (uint8_t)-r, r == -GP_ERR_CRC ? app->rx.crc_errors : app->rx.framing_errors);
            }
        }
    }
    now = hal_time_us();
    if (gp_sched_due(&app->sched, now, &skipped)) {
        gp_app_tick(app, skipped);
    }
    led_update(app, now);
}

uint64_t gp_app_next_wake(const gp_app_t *app)
{
    return gp_sched_deadline(&app->sched);
}
