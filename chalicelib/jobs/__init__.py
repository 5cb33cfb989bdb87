"""Jobs: validation of a job document and its storage."""
