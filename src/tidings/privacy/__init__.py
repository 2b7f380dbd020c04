"""Privacy and the lifecycle of data: erasing a person (``erase``)."""
