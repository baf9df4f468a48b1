"""Course support: what the notebooks compute and draw (threshold statistics, gradient aids, exercise checks,
the threshold explorer, plots, committed runs, finding files).  May use every layer below; nothing in
``ttq_lib`` imports it, so the library works without matplotlib or ipywidgets being touched.
"""
