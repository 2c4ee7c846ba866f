"""The fleet: contractors' episodes travel to a central object store and are ingested there.

store     one object-store interface: S3 (boto3, any S3-compatible endpoint) or a plain directory
upload    resumable, verified, idempotent upload of kept episodes, manifest written last
identity  the contractor id and device id, set once per rig
manifest  the manifest schema, shared by the uploader and the ingest
validate  one uploaded episode checked on its own: a catalog row, accepted or rejected with reasons
sandbox   validation in a child process with a memory cap and a time limit, retried once
ingest    the catalog and the contractor report, validation mapped over new manifests on Ray Data
emit      accepted episodes as LeRobot v3 through recorder/export_lerobot.py
simulator N contractors x M handheld episodes, some bad on purpose, for tests and benchmarks
lossy     a loopback TCP proxy that resets connections: the dropped uplink in tests and benchmarks

Compaction (JPEG frames to video) is the recorder's: recorder/compact.py.
"""
