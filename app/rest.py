"""A plain JSON search route beside the UI: ``POST /api/search``.

For programs (and curl) rather than browsers: the image goes in the request body, the
top-k of each chosen model comes back as JSON, in one round trip — no upload step, no
queue, no event stream. It calls the same :class:`~app.services.search.SearchService` as the
Search tab, with the same limits on file size and pixels and the same error texts::

    curl --data-binary @shirt.png -H 'Content-Type: image/png' \\
        'http://127.0.0.1:7860/api/search?model=eat,baseline&k=5'
    curl -F file=@shirt.png 'http://127.0.0.1:7860/api/search'

Answers: 200 with ``{"query": {...}, "out_of_domain": bool, "ood_score": float, "results":
{model: {"hits": [...], "out_of_domain": bool, "ood_score": float, ...}}}`` (the flag: the
query looks like nothing the model was trained on, see :mod:`app.services.ood`); 400 for an
empty body, an image that cannot be read or a malformed multipart form (two files, too
many fields, a missing boundary); 413 for a body over the file-size limit (counted as it
arrives, chunked or not: nothing over the limit is read or spooled); 405 for another method;
422 for a bad ``model`` (a key — ``eat``, ``baseline``, ``vanilla`` — ``both``, ``all``
(the default) or keys separated by commas) or ``k``. Each error is
``{"error": "<readable message>"}``.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .services import Services
from .services.search import DEFAULT_K, DEFAULT_MODEL, check_k, models_for
from .services.uploads import MAX_FILE_BYTES, UploadError, decode_image

log = logging.getLogger(__name__)

SEARCH_PATH = "/api/search"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


#: what a multipart form may add around its one file (boundaries, part headers)
FORM_OVERHEAD = 64 * 1024


async def _read_capped(request: Request, limit: int) -> bytes:
    """The whole body, refused (``OverflowError``) as soon as it passes ``limit`` bytes:
    a chunked body has no length to check ahead, so it is counted as it arrives and never
    spooled to disk."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise OverflowError
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OverflowError
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_form(headers: Headers, body: bytes):
    async def replay():
        yield body
        yield b""

    parser = MultiPartParser(
        headers, replay(), max_files=1, max_fields=4, max_part_size=MAX_FILE_BYTES
    )
    return await parser.parse()


async def _read_body(request: Request) -> tuple[bytes, str]:
    """The image bytes and a display name, from a raw body or a multipart ``file`` field.
    Either way at most the file-size limit (plus a form's overhead) is read."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        data = await _read_capped(request, MAX_FILE_BYTES)
        if not data:
            raise UploadError("No image: the request body is empty.")
        return data, "request body"
    body = await _read_capped(request, MAX_FILE_BYTES + FORM_OVERHEAD)
    try:
        form = await _parse_form(request.headers, body)
    except (HTTPException, MultiPartException, ValueError) as exc:  # parser errors too
        detail = getattr(exc, "detail", None) or getattr(exc, "message", "") or "unreadable"
        raise UploadError(
            f"Malformed multipart form ({str(detail).rstrip('.')}): send one image as "
            "the form field 'file', or the image itself as the request body."
        ) from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise UploadError("No image: send it as the form field 'file'.")
        data = await upload.read(MAX_FILE_BYTES + 1)
        name = upload.filename or "upload"
    finally:
        await form.close()
    if len(data) > MAX_FILE_BYTES:
        raise OverflowError
    if not data:
        raise UploadError("No image: the uploaded file is empty.")
    return data, name


def search_route(services: Services) -> Route:
    """The ``POST /api/search`` route, bound to ``services``. It decodes and searches in
    one of the server's search slots, shared with the UI
    (:meth:`~app.services.search.SearchService.limited`), so at most that many searches
    run at once, whichever way they came."""

    async def search(request: Request) -> JSONResponse:
        if request.method != "POST":
            response = _error(
                405, f"Use POST {SEARCH_PATH} with the image as the body or the form field 'file'."
            )
            response.headers["Allow"] = "POST"
            return response
        started = time.perf_counter()
        model = request.query_params.get("model", DEFAULT_MODEL)
        try:
            models_for(model, services.resources.keys)
            k = check_k(request.query_params.get("k", DEFAULT_K))
        except ValueError as exc:
            return _error(422, str(exc))
        try:
            data, name = await _read_body(request)
            result = await services.search.limited(
                lambda: services.search.search(decode_image(data, name), model, k)
            )
        except OverflowError:
            return _error(413, f"The image is over the {MAX_FILE_BYTES // (1024 * 1024)} MB limit.")
        except (UploadError, ValueError) as exc:
            return _error(400, str(exc))
        except Exception:
            log.exception("unexpected error in %s", SEARCH_PATH)
            return _error(500, "Something went wrong while searching; the server logged it.")
        return JSONResponse(
            {
                "query": {"name": name, "model": model, "k": k},
                "out_of_domain": result.out_of_domain,
                "ood_score": None if result.ood is None else round(result.ood.score, 4),
                "results": result.to_dict(),
                "seconds": round(time.perf_counter() - started, 4),
            }
        )

    return Route(SEARCH_PATH, search, methods=["GET", "POST"], name="api_search")
