"""The fleet: contractors' episodes travel to a central object store and are ingested there.

store     one object-store interface: S3 (boto3, any S3-compatible endpoint) or a plain directory
upload    resumable, verified, idempotent upload of kept episodes, manifest written last
identity  the contractor id and device id, set once per rig
manifest  the manifest schema, shared by the uploader and the ingest
ingest    validation and cataloguing of uploaded episodes on Ray Data
simulator N contractors x M handheld episodes, some bad on purpose, for tests and benchmarks
"""
