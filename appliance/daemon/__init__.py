"""The grasp service: ZeroMQ requests and events, jobs, journal, speech, settings."""
