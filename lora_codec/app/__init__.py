"""The web app's machinery, without any UI: `app.py` (the Gradio page) is layout and callbacks over
these modules, one concern each. Nothing here imports gradio.

- `runtime`: the model serving this process (loaded at import), its cost model, the model lock and
  the page's defaults for that backbone.
- `gpu`: the functions that run the model (`spaces.GPU`-decorated on ZeroGPU): a fit slice, the
  finish (quantise, write, decode) and a decode; plain values in and out.
- `forms`: checking what a user entered (numbers in range, the size choice, the rate setting, a code
  given as a file or text) and turning it into the library's settings.
- `uploads`: what the page does with an uploaded clip before any fit (the preview; what will be coded).
- `runner`: runs jobs on the server in threads, independently of the page (its own queue; a waiting
  job can be cancelled; pages follow a job and re-attach after a reload).
- `jobs`: a compress job: its folder and record, the fit in slices (one GPU call each), stop, keep
  improving, what a page load finds (a running job to follow, or what the server kept).
- `results`: a finished job's code turned into what the page shows (files, the byte table, x265 at
  the same size and the metrics, the summary).
- `decoding`: the Decode tab's work (describe a code, decode it to an mp4).
- `text`: every sentence the page shows that is built from numbers (status lines, the estimate, a
  code's description) and the page's fixed texts.

Jobs and results speak in *fields* named like the page's outputs (`OUTPUT_KEYS`); `app.py` maps them
to its components.
"""
