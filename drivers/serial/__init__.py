"""Serial ASCII instruments (scales, analysers, NMEA sensors) on RS-232/485."""
