"""The version of Tidings, one place for the package and what the server says of itself."""

VERSION = "0.1.0"
