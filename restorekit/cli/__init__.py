"""Console commands: each parses arguments, calls one library function and prints a short result."""
