"""supervision: each case's lifecycle, its legal deadlines, reminders, overdue escalation, notices."""
