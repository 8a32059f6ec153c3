-- Resource usage when the job ended (silo.v1.Usage as protobuf bytes).
ALTER TABLE jobs ADD COLUMN usage BLOB;
