"""Optional bridges to other libraries, each imported lazily by its own module."""
