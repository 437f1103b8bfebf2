"""file service: online (relayed) and offline (stored) file transfer."""
