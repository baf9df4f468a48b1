"""Reproduction: a plan of runs (depths, methods, seeds, recipes) and its runner that resumes across sessions
and machines, and the table that sets the results beside the paper's with seeds and intervals.  Uses
training, formats and data; nothing above.
"""
