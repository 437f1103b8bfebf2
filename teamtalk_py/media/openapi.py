"""The OpenAPI 3 document of the JSON API, served at ``GET /api/v1/openapi.json``.

It describes API tokens (``api.py``) and the cloud disk (``disk/api.py``): every path,
parameter, body and answer, so that clients (and the admin console) can be written from
it and ``schemathesis`` can check the server against it (``tests/disk/test_disk_api.py``).
The tus upload protocol (``/api/v1/files/``) and msfs are documented by their own
specifications and are not repeated here.
"""

from __future__ import annotations

from typing import Any

from teamtalk_py.media.context import MediaContext
from teamtalk_py.media.http import MediaRequest, send_json

JSON = "application/json"
HEX32 = "^[0-9a-f]{32}$"
#: A file name: 1 to 255 characters, none of them a control character.
NAME_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,255}$"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {JSON: {"schema": schema}}}


def answer(description: str, schema: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"description": description}
    if schema is not None:
        result.update(json_content(ref(schema)))
    return result


#: Every refusal's body: ``{"error": "what was wrong"}``.
ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}


def error(description: str) -> dict[str, Any]:
    return answer(description, "Error")


UNAUTHORIZED = error("No valid bearer token (`POST /api/v1/token` gives one).")
NOT_FOUND = error("No such file of the caller's (or not in the public list).")
BAD_REQUEST = error("A parameter is missing or not acceptable.")


def path_id(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": HEX32},
    }


FILE_ID = path_id("file_id", "A file's id (`id` of a DiskFile).")
SHARE_ID = path_id("share_id", "An entry of the public list (`id` of a SharedFile).")
PAGE = [
    {
        "name": "order",
        "in": "query",
        "description": "As added, or by downloads (`downloads_desc`: the ranking).",
        "schema": {
            "type": "string",
            "enum": ["added", "downloads_asc", "downloads_desc"],
            "default": "added",
        },
    },
    {
        "name": "start",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**53 - 1, "default": 0},
    },
    {
        "name": "count",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    },
]
BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
DOWNLOAD = {
    "parameters": [],
    "security": [],
    "responses": {
        "200": {
            "description": "The file's bytes (`ETag` is their SHA-256; `Range` is honoured).",
            "content": BYTES,
        },
        "206": {
            "description": "The range asked for.",
            "content": BYTES,
        },
        "304": {"description": "Not modified (`If-None-Match`)."},
        "404": NOT_FOUND,
        "416": {"description": "The range is outside the file."},
    },
}  # fmt: skip


def operation(
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    secured: bool = True,
    unauthorized: dict[str, Any] = UNAUTHORIZED,
) -> dict[str, Any]:
    """One operation; a ``secured`` one may answer 401 (``unauthorized``)."""
    result: dict[str, Any] = {"summary": summary, "responses": dict(responses)}
    if parameters:
        result["parameters"] = parameters
    if body is not None:
        result["requestBody"] = body
    if secured:
        result["responses"].setdefault("401", unauthorized)
    else:
        result["security"] = []
    return result


SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "TokenRequest": {
        "type": "object",
        "required": ["user", "password"],
        "properties": {
            "user": {"type": "string", "minLength": 1},
            "password": {
                "type": "string",
                "pattern": "^[0-9A-Fa-f]{32}$",
                "description": "The MD5 hex of the password (what TeamTalk clients send).",
            },
        },
    },
    "Token": {
        "type": "object",
        "required": ["token", "user_id", "expires_at"],
        "properties": {
            "token": {"type": "string"},
            "user_id": {"type": "integer"},
            "expires_at": {"type": "integer", "description": "Unix seconds."},
        },
    },
    "DiskFile": {
        "type": "object",
        "description": "One of the caller's files.",
        "required": [
            "id", "name", "md5", "sha256", "size", "type", "created", "downloads", "shared",
            "share_id", "url",
        ],
        "properties": {
            "id": {"type": "string", "pattern": HEX32},
            "name": {"type": "string", "description": "Data, never a path."},
            "md5": {"type": "string", "pattern": HEX32},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "size": {"type": "integer", "minimum": 0},
            "type": {"type": "string", "description": "The name's extension, lower case."},
            "created": {"type": "integer", "description": "Unix seconds."},
            "downloads": {"type": "integer", "minimum": 0},
            "shared": {"type": "boolean"},
            "share_id": {"type": ["string", "null"], "pattern": HEX32},
            "url": {
                "type": "string",
                "format": "uri",
                "description": "Downloads the file without a token: hand it out with care.",
            },
        },
    },
    "SharedFile": {
        "type": "object",
        "description": "An entry of the public list.",
        "required": ["id", "owner", "name", "md5", "size", "type", "created", "downloads", "url"],
        "properties": {
            "id": {"type": "string", "pattern": HEX32},
            "owner": {"type": "string", "description": "The user name of who shared it."},
            "name": {"type": "string"},
            "md5": {"type": "string", "pattern": HEX32},
            "size": {"type": "integer", "minimum": 0},
            "type": {"type": "string"},
            "created": {"type": "integer", "description": "Unix seconds it was shared."},
            "downloads": {"type": "integer", "minimum": 0},
            "url": {"type": "string", "format": "uri"},
        },
    },
    "FileList": {
        "type": "object",
        "required": ["total", "start", "files"],
        "properties": {
            "total": {"type": "integer", "minimum": 0},
            "start": {"type": "integer", "minimum": 0},
            "files": {"type": "array", "items": ref("DiskFile")},
        },
    },
    "SharedList": {
        "type": "object",
        "required": ["total", "start", "files"],
        "properties": {
            "total": {"type": "integer", "minimum": 0},
            "start": {"type": "integer", "minimum": 0},
            "files": {"type": "array", "items": ref("SharedFile")},
        },
    },
    "Import": {
        "type": "object",
        "required": ["upload"],
        "properties": {
            "upload": {"type": "string", "description": "The id of a finished tus upload."},
            "name": {
                "type": "string",
                "pattern": NAME_PATTERN,
                "description": "Default: the name the upload was given.",
            },
        },
    },
    "InstantUpload": {
        "type": "object",
        "required": ["name", "md5"],
        "properties": {
            "name": {"type": "string", "pattern": NAME_PATTERN},
            "md5": {"type": "string", "pattern": "^[0-9A-Fa-f]{32}$"},
        },
    },
}  # fmt: skip

PATHS: dict[str, Any] = {
    "/api/v1/token": {
        "post": operation(
            "A token for a user name and password (failures count towards the lockout).",
            {
                "200": answer("The token.", "Token"),
                "400": BAD_REQUEST,
                "401": error("Wrong user name or password."),
                "429": error("Too many failed logins: try again later."),
            },
            body={"required": True, **json_content(ref("TokenRequest"))},
            secured=False,
        )
    },
    "/api/v1/disk/files": {
        "get": operation(
            "The caller's files, a page at a time.",
            {"200": answer("A page of files.", "FileList"), "400": BAD_REQUEST},
            parameters=PAGE,
        ),
        "post": operation(
            "Upload a file: the request body is its bytes (streamed to disk).",
            {
                "201": answer("Stored: the new file.", "DiskFile"),
                "200": answer("The caller had these bytes under this name already.", "DiskFile"),
                "400": BAD_REQUEST,
                "413": error("Larger than media.max_upload_size, or over the user's quota."),
                "422": error("The bytes' MD5 is not the `md5` given."),
                "507": error("Not enough disk space."),
            },
            parameters=[
                {
                    "name": "name",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "pattern": NAME_PATTERN},
                },
                {
                    "name": "md5",
                    "in": "query",
                    "description": "When given, the upload is refused unless the bytes match.",
                    "schema": {"type": "string", "pattern": "^[0-9A-Fa-f]{32}$"},
                },
            ],
            body={
                "required": True,
                "content": BYTES,
            },
        ),
    },
    "/api/v1/disk/instant-uploads": {
        "post": operation(
            "Add a file without uploading it, when bytes with this MD5 are already readable "
            "by the caller (their own files, or the public list).",
            {
                "201": answer("Added.", "DiskFile"),
                "200": answer("The caller had this file already.", "DiskFile"),
                "400": BAD_REQUEST,
                "404": error("No readable bytes with this MD5: upload them."),
                "413": error("Over the user's quota."),
            },
            body={"required": True, **json_content(ref("InstantUpload"))},
        )
    },
    "/api/v1/disk/imports": {
        "post": operation(
            "Add a finished resumable (tus) upload of the caller's to their files (no bytes "
            "move; large files go up resumably at /api/v1/files/, then come here).",
            {
                "201": answer("Added.", "DiskFile"),
                "200": answer("The caller had this file already.", "DiskFile"),
                "400": BAD_REQUEST,
                "404": error("No such finished upload of the caller's."),
                "413": error("Over the user's quota."),
            },
            body={"required": True, **json_content(ref("Import"))},
        )
    },
    "/api/v1/disk/files/{file_id}": {
        "parameters": [FILE_ID],
        "get": operation(
            "One of the caller's files.", {"200": answer("The file.", "DiskFile"), "404": NOT_FOUND}
        ),
        "delete": operation(
            "Delete the file (and take it out of the public list).",
            {"204": {"description": "Deleted."}, "404": NOT_FOUND},
        ),
    },
    "/api/v1/disk/files/{file_id}/content": {
        "parameters": [FILE_ID],
        "get": {"summary": "Download the file (its URL is the secret).", **DOWNLOAD},
        "head": {"summary": "The download's headers.", **DOWNLOAD},
    },
    "/api/v1/disk/files/{file_id}/downloads": {
        "parameters": [FILE_ID],
        "post": operation(
            "Count one download of the file.",
            {"200": answer("The file, counted.", "DiskFile"), "404": NOT_FOUND},
        ),
    },
    "/api/v1/disk/files/{file_id}/share": {
        "parameters": [FILE_ID],
        "post": operation(
            "Put the file in the public list.",
            {
                "201": answer("Its entry.", "SharedFile"),
                "404": NOT_FOUND,
                "409": error("A file of this MD5 and name is in the public list already."),
            },
        ),
    },
    "/api/v1/disk/shared": {
        "get": operation(
            "The public list, a page at a time; `order=downloads_desc` is the ranking.",
            {"200": answer("A page of the list.", "SharedList"), "400": BAD_REQUEST},
            parameters=PAGE,
        )
    },
    "/api/v1/disk/shared/{share_id}": {
        "parameters": [SHARE_ID],
        "get": operation(
            "An entry of the public list.",
            {"200": answer("The entry.", "SharedFile"), "404": NOT_FOUND},
        ),
        "delete": operation(
            "Take the caller's file out of the public list.",
            {"204": {"description": "Taken out."}, "404": NOT_FOUND},
        ),
    },
    "/api/v1/disk/shared/{share_id}/content": {
        "parameters": [SHARE_ID],
        "get": {"summary": "Download a shared file (while it is shared).", **DOWNLOAD},
        "head": {"summary": "The download's headers.", **DOWNLOAD},
    },
    "/api/v1/disk/shared/{share_id}/save": {
        "parameters": [SHARE_ID],
        "post": operation(
            "Save a shared file into the caller's files (no bytes move).",
            {
                "201": answer("Saved: the new file.", "DiskFile"),
                "200": answer("The caller had this file already.", "DiskFile"),
                "404": NOT_FOUND,
                "413": error("Over the user's quota."),
            },
        ),
    },
    "/api/v1/disk/shared/{share_id}/downloads": {
        "parameters": [SHARE_ID],
        "post": operation(
            "Count one download of a shared file (its rank).",
            {"200": answer("The entry, counted.", "SharedFile"), "404": NOT_FOUND},
        ),
    },
}  # fmt: skip


def openapi_document(
    title: str,
    description: str,
    server_url: str,
    paths: dict[str, Any],
    schemas: dict[str, Any],
    security_schemes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An OpenAPI 3.1 document whose calls take a bearer token unless they say not."""
    schemes = security_schemes or {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1", "description": description},
        "servers": [{"url": server_url.rstrip("/")}],
        "security": [{name: []} for name in schemes],
        "paths": paths,
        "components": {"securitySchemes": schemes, "schemas": schemas},
    }


def document(public_url: str) -> dict[str, Any]:
    return openapi_document(
        "teamtalk_py media API",
        "API tokens and the cloud disk: each user's files, the public list of shared files "
        "ranked by downloads, instant upload, save, delete. Every call takes "
        "`Authorization: Bearer TOKEN` except the token request and the downloads. "
        "Resumable uploads: tus 1.0.0 at `/api/v1/files/`.",
        public_url,
        PATHS,
        SCHEMAS,
    )


async def serve(context: MediaContext, request: MediaRequest) -> None:
    """``GET /api/v1/openapi.json``."""
    send_json(request, 200, document(context.library.public_url()))
