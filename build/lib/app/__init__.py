"""The application: the demo and the command line, above the flows (deploy -> app -> flows -> tasks ->
selftrain -> storage)."""
