"""The `cfs` command: `main` parses arguments and every subcommand calls the library."""
