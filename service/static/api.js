// Talking to the reconstruction API: one POST per request, errors turned into readable ApiErrors.

/** An error answer of the API (an RFC 9457 problem document) or a failed request. */
export class ApiError extends Error {
  constructor(title, detail = "") {
    super(detail ? `${title}: ${detail}` : title);
    this.title = title;
    this.detail = detail;
  }
}

/** POST `files` ([field, File] pairs) with form options to `endpoint`; resolves to the Response when it is a
 * success. */
async function post(endpoint, files, options) {
  const form = new FormData();
  for (const [field, file] of files) form.append(field, file, file.name || "photo.jpg");
  for (const [name, value] of Object.entries(options)) form.append(name, String(value));
  let response;
  try {
    response = await fetch(endpoint, { method: "POST", body: form });
  } catch (err) {
    throw new ApiError("The service could not be reached", err.message);
  }
  if (!response.ok) throw await problemOf(response);
  return response;
}

async function problemOf(response) {
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    const problem = await response.json().catch(() => ({}));
    if (problem.title) return new ApiError(problem.title, problem.detail || "");
  }
  return new ApiError(`The service answered ${response.status} ${response.statusText}`.trim());
}

/** Landmarks, pose and mesh of the faces in `photo` (format=json, include_mesh=true). */
export async function reconstructJson(photo, { space, faces }) {
  const response = await post("/v1/reconstruct", [["image", photo]], { format: "json", include_mesh: true, space, faces });
  return response.json();
}

/** The face of `identity` with the expression of `expression` (and its head pose with pose "expression"),
 * as /v1/reconstruct's JSON for the identity photo. */
export async function transferJson(identity, expression, { space, pose }) {
  const files = [["identity", identity], ["expression", expression]];
  const response = await post("/v1/transfer", files, { format: "json", include_mesh: true, space, pose });
  return response.json();
}

/** Several photos of one person: which were used, and each used photo's face on the fused identity. */
export async function personJson(photos, { space }) {
  const files = photos.map((photo) => ["images", photo]);
  const response = await post("/v1/reconstruct/person", files, { format: "json", include_mesh: true, space });
  return response.json();
}

/** A mesh file: { blob, filename }. OBJ with a texture comes as a zip. `request` is { endpoint, files }
 * (what the page shows now) and `options` the format and the rest. */
export async function meshFile({ endpoint, files }, options) {
  const response = await post(endpoint, files, options);
  const disposition = response.headers.get("Content-Disposition") || "";
  const filename = /filename="([^"]+)"/.exec(disposition)?.[1] || `face.${options.format}`;
  return { blob: await response.blob(), filename };
}
