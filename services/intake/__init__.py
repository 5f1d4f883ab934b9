"""intake: every channel in, validated, numbered, stored, published (``cases.received``)."""
