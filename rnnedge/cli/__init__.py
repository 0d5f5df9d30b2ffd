"""The `rnnedge` command line: the only package that imports argparse.

One module per command, each turning its arguments into typed options once and calling one
library function; `main` builds the parser from their table and maps errors to exit codes.
"""
