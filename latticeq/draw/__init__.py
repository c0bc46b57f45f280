"""Pictures of lattices and of what the algorithms do.

Each picture is split into a *geometry* function that computes the data to be drawn
(returning a small dataclass that tests check against the mathematics) and a *plot* function
that draws it with matplotlib's Agg backend (no display needed):

* :mod:`latticeq.draw.voronoi` — Voronoi cells of 2-D and 3-D lattices, sample errors, exact NSM.
* :mod:`latticeq.draw.theta` — theta images (vectors by squared norm, per shell and cumulative).
* :mod:`latticeq.draw.steps` — GPTQ in parameter space vs Babai in data space, step by step,
  drawn from the project's own solvers (Birnick, arXiv 2508.01077, figures 1-3).
* :mod:`latticeq.draw.results` — NSM against dimension (study CSV) and perplexity against bits
  (run records).
* :mod:`latticeq.draw.html` — one self-contained HTML report page.

Heavy imports (matplotlib) happen inside the functions that draw.
"""

from latticeq.draw.html import write_html_report

__all__ = ["write_html_report"]
