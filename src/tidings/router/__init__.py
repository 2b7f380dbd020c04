"""The router: which functions an event starts, which waiting runs it resumes, which it cancels."""
