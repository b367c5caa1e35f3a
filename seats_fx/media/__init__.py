"""Video files: the sample clip writer and the audio-track decoder (PyAV)."""
