// Talking to the reconstruction API: one POST per request, errors turned into readable ApiErrors.

const ENDPOINT = "/v1/reconstruct";

/** An error answer of the API (an RFC 9457 problem document) or a failed request. */
export class ApiError extends Error {
  constructor(title, detail = "") {
    super(detail ? `${title}: ${detail}` : title);
    this.title = title;
    this.detail = detail;
  }
}

/** POST the photo with form options; resolves to the Response when it is a success. */
async function post(photo, options) {
  const form = new FormData();
  form.append("image", photo, photo.name || "photo.jpg");
  for (const [name, value] of Object.entries(options)) form.append(name, String(value));
  let response;
  try {
    response = await fetch(ENDPOINT, { method: "POST", body: form });
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
  const response = await post(photo, { format: "json", include_mesh: true, space, faces });
  return response.json();
}

/** A mesh file of the faces in `photo`: { blob, filename }. OBJ with a texture comes as a zip. */
export async function reconstructFile(photo, { format, space, faces }) {
  const response = await post(photo, { format, texture: "uv", space, faces });
  const disposition = response.headers.get("Content-Disposition") || "";
  const filename = /filename="([^"]+)"/.exec(disposition)?.[1] || `face.${format}`;
  return { blob: await response.blob(), filename };
}
