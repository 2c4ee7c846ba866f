"""The handheld gripper's 6-DoF pose: the board seen by the wrist camera, fused with the IMU."""
