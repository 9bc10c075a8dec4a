// The API's JSON faces -> what the viewer draws: positions, normals, photo UVs, colours (the model's
// albedo), triangles, edges.
//
// Image-space vertices are photo pixels times each face's `metres_per_pixel` (origin at the
// photo centre, +Y up), as the API sends it.

const SIDE_BY_SIDE_GAP = 0.2; // metres between faces shown frontal, as in the API's mesh files
const NO_ALBEDO = 0.8; // the grey of a face whose answer has no albedo

/** Area-weighted unit vertex normals (+Z where a vertex has none). */
function vertexNormals(positions, triangles) {
  const sums = new Float32Array(positions.length);
  for (let t = 0; t < triangles.length; t += 3) {
    const [a, b, c] = [triangles[t] * 3, triangles[t + 1] * 3, triangles[t + 2] * 3];
    const e1 = [0, 1, 2].map((k) => positions[b + k] - positions[a + k]);
    const e2 = [0, 1, 2].map((k) => positions[c + k] - positions[a + k]);
    const n = [e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]];
    for (const corner of [a, b, c]) for (let k = 0; k < 3; k++) sums[corner + k] += n[k];
  }
  for (let i = 0; i < sums.length; i += 3) {
    const length = Math.hypot(sums[i], sums[i + 1], sums[i + 2]);
    if (length > 0) for (let k = 0; k < 3; k++) sums[i + k] /= length;
    else sums.set([0, 0, 1], i);
  }
  return sums;
}

/** Each triangle edge once, as pairs of vertex indices (for GL_LINES). */
function edgeIndices(triangles, vertexCount) {
  const seen = new Set();
  const edges = [];
  for (let t = 0; t < triangles.length; t += 3) {
    for (const [i, j] of [[0, 1], [1, 2], [2, 0]]) {
      const a = triangles[t + i], b = triangles[t + j];
      const key = Math.min(a, b) * vertexCount + Math.max(a, b);
      if (!seen.has(key)) {
        seen.add(key);
        edges.push(a, b);
      }
    }
  }
  return new Uint32Array(edges);
}

/** Texture coordinates into the photo (v down, as the photo is uploaded) from image-space vertices. */
function photoUvs(vertices, scale, width, height) {
  const uvs = new Float32Array(vertices.length * 2);
  vertices.forEach(([x, y], i) => {
    uvs[2 * i] = (x / scale + width / 2) / width;
    uvs[2 * i + 1] = (height / 2 - y / scale) / height;
  });
  return uvs;
}

/** Where the photo sits in image space: centred, `width * scale` by `height * scale` metres,
 * `scale` being the first face's; `faceScales` holds every face's own. */
export function photoPlacement(imageResult) {
  const { width, height } = imageResult;
  const faceScales = imageResult.faces.map((face) => face.metres_per_pixel);
  return { width, height, scale: faceScales[0], faceScales };
}

/** The faces to draw from `result` (any space), textured from the photo through `imageResult`
 * (the same photo's own faces in image space, as the photo shows them).
 *
 * In image space every face is rescaled about the photo centre to the first face's scale, so
 * that all of them line up with one photo backdrop; in the frontal spaces several faces are
 * laid out left to right in the photo's order. */
export function buildFaces(result, imageResult, placement) {
  const { width, height, faceScales } = placement;
  const order = result.faces.map((face, i) => i).sort((i, j) => result.faces[i].box[0] - result.faces[j].box[0]);
  return result.faces.map((face, i) => {
    const imageFace = imageResult.faces[i];
    const faceScale = faceScales[i];
    let offset = [0, 0, 0];
    let factor = 1;
    if (result.space === "image") factor = placement.scale / faceScale;
    else if (result.faces.length > 1) offset = [(order.indexOf(i) - (result.faces.length - 1) / 2) * SIDE_BY_SIDE_GAP, 0, 0];
    const positions = new Float32Array(face.vertices.length * 3);
    face.vertices.forEach((v, k) => {
      for (let c = 0; c < 3; c++) positions[3 * k + c] = v[c] * factor + offset[c];
    });
    const triangles = new Uint32Array(face.triangles.flat());
    return {
      positions,
      normals: vertexNormals(positions, triangles),
      uvs: photoUvs(imageFace.vertices, faceScale, width, height),
      colours: face.albedo ? new Float32Array(face.albedo.flat()) : new Float32Array(positions.length).fill(NO_ALBEDO),
      triangles,
      edges: edgeIndices(triangles, face.vertices.length),
    };
  });
}

/** Centre and radius of a sphere around every vertex of `faces`. */
export function boundingSphere(faces) {
  const min = [Infinity, Infinity, Infinity], max = [-Infinity, -Infinity, -Infinity];
  for (const { positions } of faces) {
    for (let i = 0; i < positions.length; i += 3) {
      for (let c = 0; c < 3; c++) {
        min[c] = Math.min(min[c], positions[i + c]);
        max[c] = Math.max(max[c], positions[i + c]);
      }
    }
  }
  const centre = min.map((m, c) => (m + max[c]) / 2);
  return { centre, radius: Math.hypot(...max.map((m, c) => m - min[c])) / 2, minZ: min[2] };
}
