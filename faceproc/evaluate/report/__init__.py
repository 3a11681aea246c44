"""`reports/report.html`: one self-contained page that shows what a run did and how well.

Everything the page shows is read from the run's outputs under OUT through the same live-row logic
evaluation uses (`data`), and from the original photos the shards point to (`images`). Every
picture is an embedded JPEG `data:` URI, the CSS is inline (`assets/report.css`), there is no
JavaScript and no external resource, so the file can be mailed, archived or opened offline.
Missing pieces are shown as a short note instead of failing the report.

Modules: `data` reads the outputs, `images` makes thumbnails, `charts` draws SVG, `markup` holds
the small HTML pieces, `sections` and `gallery` render the page sections, `page` assembles and
writes the page (`page.write_report`).
"""
