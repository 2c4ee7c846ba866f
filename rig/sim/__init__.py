"""The simulated bimanual ALOHA: MuJoCo physics behind emulated Dynamixel buses, plus a scripted operator.

Importing this package does not import MuJoCo; ``launch.start_world`` does, in the world process.
"""
