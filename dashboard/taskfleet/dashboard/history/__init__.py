"""The dashboard's durable history: a SQLite file with a retention setting, never process memory."""
