"""The data path: scheduler, processing, buffer, encoders, uplink."""
