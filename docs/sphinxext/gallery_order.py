"""Order of the examples in the gallery: from first steps to real data."""

FIRST = [
    "plot_quickstart.py",
    "plot_anomaly_maps.py",
    "plot_predict_new_images.py",
    "plot_grid_search.py",
]
LAST = ["plot_mtd.py"]


class ExampleOrder:
    """Sort key for sphinx-gallery's ``within_subsection_order``."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        if filename in FIRST:
            return (0, FIRST.index(filename), filename)
        if filename in LAST:
            return (2, LAST.index(filename), filename)
        return (1, 0, filename)
