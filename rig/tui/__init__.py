"""The collector's terminal app (Textual): live rig health, one-key takes, instant replay.

`rig.tui.controller.Collector` owns the rig (session, takes, world) and runs every blocking
step on its own worker thread; the Textual app in `rig.tui.app` only reads its snapshots.
"""
