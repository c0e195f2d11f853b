"""Pure OCI protocol vocabulary: digests, name/tag grammar, media types,
manifest parsing and the error table. No I/O, no framework imports."""
