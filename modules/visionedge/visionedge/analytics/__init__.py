"""Scene analytics: tracks, line crossings, zones and dwell, per source, on the device."""
