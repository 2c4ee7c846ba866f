/* Simulated gripper hardware for the host port: register-level AS5600 and IMU models, bouncy
 * trigger/buttons, and a jaw that opens and closes on its own or holds a commanded position. */
#ifndef GP_SIM_H
#define GP_SIM_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    double jaw_period_s;  /* auto open/close period; 0 = hold jaw_hold */
    double jaw_hold;      /* 0 closed .. 1 open */
    int jaw_auto;
    uint16_t closed_raw;
    uint16_t open_counts; /* encoder counts between closed and fully open */
    uint8_t inputs;       /* commanded (clean) level: bit 0 trigger, bits 1.. buttons */
    uint64_t bounce_until_us[8];
    double imu_noise_lsb;
    int encoder_ok, imu_ok;
    uint32_t serial;
    /* A recorded motion (--imu-trace): rows of t_s, gyro xyz rad/s, accel xyz m/s^2, jaw 0..1 in the
     * IMU's frame, played from the device time of "trace start"; before it, the first row. */
    double *trace;
    size_t trace_rows;
    int trace_playing;
    uint64_t trace_start_us;
} sim_t;

extern sim_t sim;

void sim_init(uint32_t seed);
void sim_seed(uint32_t seed);
void sim_set_input(int bit, int level);
double sim_gauss(void);
double sim_uniform(void);
int sim_load_trace(const char *path);
void sim_trace_start(void);

#endif
