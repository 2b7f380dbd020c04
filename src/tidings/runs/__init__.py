"""The run queue: runs, their recorded steps and their pauses, kept in the database."""
