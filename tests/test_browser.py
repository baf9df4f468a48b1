"""Notebook 01 in a real browser: JupyterLab, headless Chromium driven by Playwright, the threshold explorer.

The other explorer tests (test_explorer.py) drive the Python object; this one checks what a student sees:
the widgets render in JupyterLab 4 (the @jupyter-widgets/jupyterlab-manager extension that ipywidgets 8
brings), "Run All Cells" runs the notebook without an error, and typing a new t into the t slider's readout
goes through the kernel and back: the summary line and the figure change.

What it needs: the Debian package ``chromium`` (or ``$TTQ_CHROMIUM`` naming a Chromium / Chrome binary) and
the Python package ``playwright`` (a dev extra; only its driver is used, never its browser download).
``.ci/run`` installs Chromium when it can (root or passwordless sudo); without a Chromium the test skips and
says so.  It runs notebook 01 in fast mode (``TTQ_FAST=1``) on a copy in a temporary folder: the kernel
finds the checkout through ``workbook.find_repo_root``'s fallback (the folder ttq_lib was installed from).

"No cell shows an error", precisely: JupyterLab renders an error's traceback with the same mime type as a
stderr stream (``application/vnd.jupyter.stderr``; warnings are stderr too, and allowed), so the page's
notebook model is asked for outputs of ``output_type == "error"``; independently the DOM must show an
execution count in every code cell (an exception makes the kernel abort the rest of Run All) and no widget
that failed to render ("Error displaying widget", ``.jupyter-widgets-error-widget``).  A second test runs
that check on a small notebook that warns and then raises, so the check is shown to tell the two apart.
(``window.jupyterapp``, the page's application object, exists because the server is started with
``--LabApp.expose_app_in_browser``.)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_threshold_selection.ipynb"
PROBE = "error_probe.ipynb"  # a small notebook beside it that raises: the error check must see it
NEW_T = 0.2            # typed into the readout (the test checks first that the slider does not show it)
START_TIMEOUT_S = 120  # JupyterLab answering, the page and its kernel ready (generous: a busy machine)
RUN_TIMEOUT_S = 300    # Run All Cells in fast mode (123 s measured on 2 cores at load average 12-16)
UPDATE_TIMEOUT_S = 60  # one explorer update: the kernel round trip and a redraw


def _chromium() -> str:
    """The Chromium binary: ``$TTQ_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH; else skip."""
    named = os.environ.get("TTQ_CHROMIUM")
    if named:
        if not (Path(named).is_file() and os.access(named, os.X_OK)):
            pytest.fail(f"TTQ_CHROMIUM={named} is not an executable file: point it at a Chromium or Chrome binary")
        return named
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("Chromium is not installed: install the Debian package `chromium` (apt-get install chromium; "
                ".ci/run does this as root or with passwordless sudo) or set TTQ_CHROMIUM to a Chromium binary")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _clean_copy(folder: Path) -> Path:
    """Notebook 01 without its committed outputs and execution counts, so every count seen comes from this run."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    path = folder / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (Linux /proc); a Jupyter kernel runs in its own session, so the server's
    process group does not hold it."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _stop(proc: subprocess.Popen) -> None:
    """Stop JupyterLab: SIGTERM to its process group and to every process below it (the kernel), then SIGKILL
    whatever is left after a few seconds."""
    if proc.poll() is not None:
        return
    below = _descendants(proc.pid)
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        for send in (lambda: os.killpg(proc.pid, sig), *(lambda p=p: os.kill(p, sig) for p in below)):
            try:
                send()
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _jupyter_home(base: Path) -> dict:
    """Jupyter's config, runtime and data folders and JupyterLab's settings and workspaces, all under ``base``:
    nothing of the user's (or of an earlier run) leaks in, nothing is written into the checkout.  What is
    switched off is unrelated to the explorer and costs seconds on a busy machine: server extensions other
    than JupyterLab, a few frontend plugins (nbgrader, Notebook 7's menu, extension manager, language servers,
    debugger), JupyterLab's build check, news and update checks (there is no network)."""
    config, settings = base / "config", base / "lab-settings"
    off = ["nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.validate_assignment",
           "nbgrader.server_extensions.assignment_list", "nbgrader.server_extensions.course_list",
           "jupyter_lsp", "jupyter_server_terminals", "notebook"]
    _write_json(config / "jupyter_server_config.json",
                json.dumps({"ServerApp": {"jpserver_extensions": {name: False for name in off}}}))
    plugins = ["@jupyter/nbgrader", "@jupyter-notebook/lab-extension", "@jupyterlab/extensionmanager-extension",
               "@jupyterlab/lsp-extension", "@jupyterlab/debugger-extension"]
    _write_json(config / "labconfig" / "page_config.json",  # no build check: it scans every extension
                json.dumps({"disabledExtensions": {name: True for name in plugins},
                            "buildCheck": False, "buildAvailable": False}))
    # every cell in the DOM, offscreen ones not painted (JupyterLab's default; 'full' would detach them)
    _write_json(settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
                '{"windowingMode": "contentVisibility"}')
    # no news / update toasts (no network here, and nothing should cover the page)
    _write_json(settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
                '{"fetchNews": "false", "checkForUpdates": false}')
    return {"JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
            "JUPYTER_DATA_DIR": str(base / "data"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"), "IPYTHONDIR": str(base / "ipython")}


def _wait_for_server(proc: subprocess.Popen, url: str, token: str, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with status {proc.returncode}:\n{log()}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"JupyterLab did not answer on {url} within {START_TIMEOUT_S} s:\n{log()}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """Notebook 01 (a clean copy) open in JupyterLab in headless Chromium, its kernel idle.

    JupyterLab listens on 127.0.0.1, a free port, with a random token, serving a temporary folder; it runs in
    its own process group and is always stopped, kernel included.  Chromium starts while the server boots.
    """
    chromium = _chromium()  # skip before starting anything
    from playwright.sync_api import sync_playwright

    base = tmp_path_factory.mktemp("browser")
    work = base / "notebooks"
    work.mkdir()
    _clean_copy(work)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in PROBE_CELLS],
                                            metadata=nbformat.read(NOTEBOOK, as_version=4).metadata), work / PROBE)
    env = dict(os.environ)
    env.update(_jupyter_home(base))
    env.update({"TTQ_FAST": "1", "TTQ_THREADS": "1",
                "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")})
    env.pop("JUPYTER_PATH", None)
    if env.get("TTQ_PRETRAINED_DIR"):  # the kernel runs elsewhere: a relative folder would not resolve
        env["TTQ_PRETRAINED_DIR"] = str(Path(env["TTQ_PRETRAINED_DIR"]).resolve())
    port, token = _free_port(), uuid.uuid4().hex
    log_path = base / "jupyterlab.log"

    def log() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
             "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: the outputs' types (module docstring)
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
            + (["--allow-root"] if os.geteuid() == 0 else []),
            cwd=work, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    pw = browser = None
    try:
        pw = sync_playwright().start()
        args = ["--disable-gpu", "--disable-dev-shm-usage"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run its sandbox as root
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        url = f"http://127.0.0.1:{port}"
        _wait_for_server(proc, url, token, log)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(START_TIMEOUT_S * 1000)
        try:
            tab.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
            tab.wait_for_selector(".jp-Notebook .jp-CodeCell")
            tab.wait_for_function(_KERNEL_IDLE_JS)
        except Exception as error:  # playwright's TimeoutError and the like: show what the server said
            pytest.fail(f"notebook 01 did not open with an idle kernel: {error}\nJupyterLab's log:\n{log()}")
        yield tab
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        _stop(proc)


# ----- reading the page ------------------------------------------------------------------------------

# the notebook's kernel connected and idle (the toolbar's execution indicator already says "idle" while the
# session is still starting, and Run All then finds no kernel and runs nothing)
_KERNEL_IDLE_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
                 && panel.sessionContext.session.kernel;
  return Boolean(kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle');
}"""

# the input prompts ("[3]:", "[*]:", "[ ]:") of the code cells of the notebook in front
_PROMPTS_JS = """() => [...window.jupyterapp.shell.currentWidget.node
                         .querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent.trim())"""

# the outputs of type "error" in the notebook in front, from the model the page renders (the DOM shows an
# error's traceback with the stderr mime type, like any warning: see the module docstring)
_ERRORS_JS = """() => {
  const errors = [];
  window.jupyterapp.shell.currentWidget.content.widgets.forEach((cell, i) => {
    if (cell.model.type !== 'code') return;
    for (const out of cell.model.outputs.toJSON())
      if (out.output_type === 'error') errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
  });
  return errors;
}"""

# what the figure shows: an <img>'s data URL (inline backend) or a <canvas>'s pixels (ipympl)
_FIGURE_JS = """(root) => {
  const img = root.querySelector('img');
  if (img && img.naturalWidth > 0) return img.src;
  const canvas = root.querySelector('canvas');
  if (canvas && canvas.width > 0) return canvas.toDataURL();
  return null;
}"""

_NUMBERED = re.compile(r"\[\d+\]:")


def _wait_until(what: str, check, timeout_s: float, interval_s: float = 0.25):
    """Poll ``check()`` until it returns a true value (returned); fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def _front(page):
    """The notebook panel in front (JupyterLab keeps other tabs in the DOM, hidden)."""
    panel_id = page.evaluate("() => window.jupyterapp.shell.currentWidget.id")
    return page.locator(f'[id="{panel_id}"]')


def _run_all(page) -> list[str]:
    """Run > Run All Cells from the menu bar; wait until no cell is queued or running; return the prompts.

    The copies have no execution counts, so a numbered first cell means the run started; a cell that raises
    makes the kernel drop the queued ones, whose prompts go back to "[ ]:".
    """
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    def finished():
        prompts = page.evaluate(_PROMPTS_JS)
        started = prompts and _NUMBERED.fullmatch(prompts[0])
        return prompts if started and not any("*" in p for p in prompts) else None

    prompts = _wait_until("Run All Cells to finish", finished, RUN_TIMEOUT_S, interval_s=0.5)
    page.wait_for_function(_KERNEL_IDLE_JS)
    return prompts


def _cell_errors(page, prompts: list[str]) -> list[str]:
    """Every way a cell of the notebook in front shows an error (module docstring); empty when none does."""
    front = _front(page)
    problems = page.evaluate(_ERRORS_JS)
    problems += [f"code cell {i} did not run (prompt {p!r})"
                 for i, p in enumerate(prompts) if not _NUMBERED.fullmatch(p)]
    problems += ["a widget failed to render"] * (front.get_by_text("Error displaying widget").count()
                                                  + front.locator(".jupyter-widgets-error-widget").count())
    return problems


def _explorer_cell(page):
    """The code cell showing the explorer: the one holding a slider whose description is exactly 't'."""
    # a `has=` locator is matched inside each candidate, so it is built from the page, not from `front`
    t_label = page.locator(".widget-label", has_text=re.compile(r"^\s*t\s*$"))
    t_slider = page.locator(".widget-slider").filter(has=t_label)
    cell = _front(page).locator(".jp-CodeCell").filter(has=t_slider).first
    return cell, cell.locator(".widget-slider").filter(has=t_label).first


def _expected_thresholds(t: float) -> list[float]:
    """``t * max|w|`` for every conv and linear layer of the pretrained ResNet-20 notebook 01 loads (paper Sec. 3)."""
    import torch

    import ttq_lib
    from ttq_lib.course import workbook

    model, _ = ttq_lib.load_model(workbook.pretrained_checkpoint(ROOT))
    layers = (torch.nn.Conv2d, torch.nn.Linear)  # the explorer's layer dropdown offers both
    return [t * float(m.weight.detach().abs().max()) for m in model.modules() if isinstance(m, layers)]


def _shows_one_of(text: str, values: list[float]) -> bool:
    """Whether a decimal number printed in ``text`` equals one of ``values`` to its printed precision."""
    for number in re.findall(r"\d+\.\d+", text):
        tol = 0.5 * 10.0 ** -len(number.split(".")[1]) + 1e-12
        if any(abs(float(number) - v) <= tol for v in values):
            return True
    return False


def test_notebook01_explorer_in_chromium(page):
    started = time.monotonic()
    prompts = _run_all(page)
    run_s = time.monotonic() - started
    assert not _cell_errors(page, prompts), f"notebook 01 shows errors: {_cell_errors(page, prompts)}"

    cell, slider = _explorer_cell(page)
    assert slider.count() == 1, "no slider described 't' rendered: are the widgets (jupyterlab-manager) loaded?"
    readout = slider.locator(".widget-readout")
    figure = cell.locator(".widget-output").first
    figure.scroll_into_view_if_needed()
    htmls = cell.locator(".widget-html")

    def html_texts():
        return [htmls.nth(i).inner_text() for i in range(htmls.count())]

    before_html = html_texts()
    before_figure = figure.evaluate(_FIGURE_JS)
    assert before_html, "the explorer shows no summary line (an ipywidgets HTML)"
    assert before_figure, "the explorer's output widget shows no figure (no <img> or <canvas>)"
    t_text = f"{NEW_T:.3f}"
    assert readout.inner_text().strip() != t_text, "pick another NEW_T: the slider already shows it"

    # type the new t into the readout, as a student would, and commit it with Enter
    readout.click()
    readout.fill("")
    readout.press_sequentially(str(NEW_T))
    readout.press("Enter")

    def summary_changed():
        changed = [now for now, before in zip(html_texts(), before_html) if now != before]
        return [text for text in changed if t_text in text]

    summary = _wait_until(f"a summary line showing t = {t_text}", summary_changed, UPDATE_TIMEOUT_S)[0]
    after_figure = _wait_until("the figure to be redrawn",
                               lambda: (f := figure.evaluate(_FIGURE_JS)) and f != before_figure and f,
                               UPDATE_TIMEOUT_S)
    assert after_figure.startswith("data:image/"), after_figure[:40]
    # the kernel computed the new threshold t * max|w| of a real layer, and the value came back to the view
    assert _shows_one_of(summary, _expected_thresholds(NEW_T)), f"no threshold {NEW_T} * max|w| in: {summary}"
    assert readout.inner_text().strip() == t_text  # in the slider's own readout format
    assert not _cell_errors(page, prompts)
    print(f"Run All Cells: {run_s:.1f} s; summary after typing t = {NEW_T}: {summary}")


PROBE_CELLS = ["print('before')", "import warnings\nwarnings.warn('only a warning')",
               "raise RuntimeError('probe')", "print('never runs')"]


def test_error_check_sees_a_raising_cell_and_not_a_warning(page):
    """The check above can fail: on a small notebook whose third cell raises, it reports exactly that cell
    and the one Run All then skipped, and not the cell that only warned (stderr)."""
    page.evaluate(f"() => {{ window.jupyterapp.commands.execute('docmanager:open', {{path: '{PROBE}'}}); }}")
    page.wait_for_function(f"() => window.jupyterapp.shell.currentWidget?.context?.path === '{PROBE}'")
    page.wait_for_function(_KERNEL_IDLE_JS)
    prompts = _run_all(page)
    assert [bool(_NUMBERED.fullmatch(p)) for p in prompts] == [True, True, True, False], prompts
    assert _cell_errors(page, prompts) == ["cell 2: RuntimeError: probe", "code cell 3 did not run (prompt '[ ]:')"]
    stderr = _front(page).locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    assert stderr.count() == 2  # the warning and the traceback look alike in the DOM
    assert "only a warning" in stderr.first.inner_text()
