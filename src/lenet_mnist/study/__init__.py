"""What a sweep's runs say together: intervals, the critical batch size, the report (no torch)."""
