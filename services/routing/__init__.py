"""routing: chooses each case's lead and co-handling units, and a lead leader for important cases."""
