// The 3D view: WebGL 2, one small shader with Lambert shading, triangles or a line wireframe,
// coloured grey, from the photo or by per-vertex colours (the model's albedo), and the photo as a
// backdrop for the overlay. The meshes' triangles are counter-clockwise seen
// from outside, so a back face is the inside of the mask: shaded darker and warmer.

import { OrbitCamera, attachOrbitControls } from "./camera.js";

const BACKGROUND = [0.114, 0.137, 0.165];
const SKIN_GREY = [0.82, 0.8, 0.78];
const WIRE_COLOUR = [0.45, 0.95, 0.85];
const OVERLAY_OPACITY = 0.8; // a shaded mesh over the photo lets the photo show through a little
const INSIDE_TINT = [0.5, 0.43, 0.4]; // back faces: about 0.45 as bright, a little warmer
const MAX_PHOTO_SIDE = 4096;

// How a fragment is coloured (the shader's uShading).
const LAMBERT_COLOUR = 0, LAMBERT_PHOTO = 1, FLAT_COLOUR = 2, FLAT_PHOTO = 3, LAMBERT_VERTEX = 4;

const VERTEX_SHADER = `#version 300 es
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
layout(location = 2) in vec2 uv;
layout(location = 3) in vec3 vertexColour;
uniform mat4 uView, uProjection;
out vec3 vNormal;
out vec2 vUv;
out vec3 vColour;
void main() {
  vNormal = mat3(uView) * normal;  // the view has no scaling: its 3x3 part rotates normals too
  vUv = uv;
  vColour = vertexColour;
  gl_Position = uProjection * uView * vec4(position, 1.0);
}`;

const FRAGMENT_SHADER = `#version 300 es
precision mediump float;
in vec3 vNormal;
in vec2 vUv;
in vec3 vColour;
uniform int uShading;
uniform vec3 uColour;
uniform float uOpacity;
uniform sampler2D uPhoto;
out vec4 colour;
void main() {
  bool photo = uShading == ${LAMBERT_PHOTO} || uShading == ${FLAT_PHOTO};
  bool own = photo || uShading == ${LAMBERT_VERTEX};  // colours of their own: shaded lightly
  vec3 base = photo ? texture(uPhoto, vUv).rgb : uShading == ${LAMBERT_VERTEX} ? vColour : uColour;
  if (uShading != ${FLAT_COLOUR} && uShading != ${FLAT_PHOTO}) {
    vec3 n = normalize(gl_FrontFacing ? vNormal : -vNormal);
    float diffuse = max(dot(n, normalize(vec3(0.4, 0.5, 0.8))), 0.0);  // light from above right of the eye
    base *= own ? 0.55 + 0.45 * diffuse : 0.25 + 0.75 * diffuse;
    if (!gl_FrontFacing) base *= vec3(${INSIDE_TINT.join(", ")});  // the inside reads as the inside
  }
  colour = vec4(base, uOpacity);
}`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
  return shader;
}

function linkProgram(gl) {
  const program = gl.createProgram();
  gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
  gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
  return program;
}

/** Decoded photo (EXIF orientation applied), shrunk to fit a texture. */
export async function decodePhoto(blob) {
  const probe = await createImageBitmap(blob, { imageOrientation: "from-image" });
  const shrink = Math.min(1, MAX_PHOTO_SIDE / Math.max(probe.width, probe.height));
  if (shrink === 1) return probe;
  const options = { imageOrientation: "from-image", resizeWidth: Math.round(probe.width * shrink),
    resizeHeight: Math.round(probe.height * shrink), resizeQuality: "high" };
  probe.close();
  return createImageBitmap(blob, options);
}

export class Viewer {
  constructor(canvas) {
    this.canvas = canvas;
    const gl = canvas.getContext("webgl2", { antialias: true });
    if (!gl) throw new Error("this browser cannot show 3D (WebGL 2 is off or missing)");
    this.gl = gl;
    this.program = linkProgram(gl);
    this.uniforms = Object.fromEntries(["uView", "uProjection", "uShading", "uColour", "uOpacity", "uPhoto"]
      .map((name) => [name, gl.getUniformLocation(this.program, name)]));
    this.camera = new OrbitCamera();
    this.meshes = [];
    this.backdrop = null; // the photo quad behind the meshes, in image space
    this.placement = null;
    this.bounds = null;
    this.photo = null;
    this.frameRequested = false;
    this.mode = "shaded";
    this.overlay = false;
    attachOrbitControls(canvas, this.camera, () => this.redraw());
    new ResizeObserver(() => this.redraw()).observe(canvas);
  }

  /** The photo the meshes are textured from and drawn over (an ImageBitmap), or null for none. */
  setPhoto(bitmap) {
    const gl = this.gl;
    if (this.photo) gl.deleteTexture(this.photo);
    this.photo = null;
    if (bitmap) {
      this.photo = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, this.photo);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, bitmap);
      gl.generateMipmap(gl.TEXTURE_2D);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR_MIPMAP_LINEAR);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    }
    this.redraw();
  }

  /** Show `faces` (from meshes.buildFaces); `placement` (meshes.photoPlacement) puts the photo
   * behind them, in image space only (null otherwise). `bounds` frames the camera. */
  setScene(faces, placement, bounds) {
    for (const mesh of [...this.meshes, this.backdrop]) if (mesh) this.deleteMesh(mesh);
    this.meshes = faces.map((face) => this.uploadMesh(face));
    this.backdrop = placement ? this.uploadMesh(this.backdropQuad(placement, bounds.minZ)) : null;
    this.placement = placement;
    this.bounds = bounds;
    this.resetView();
  }

  /** "textured", "albedo", "shaded" or "wireframe". */
  setMode(mode) {
    this.mode = mode;
    this.redraw();
  }

  /** Draw over the photo with a camera that lines the mesh up with it (image space only). */
  setOverlay(on) {
    this.overlay = on;
    this.resetView();
  }

  resetView() {
    const { centre, radius } = this.bounds || { centre: [0, 0, 0], radius: 1 };
    if (this.overlay && this.placement) {
      const { width, height, scale } = this.placement;
      const halfExtents = [(width * scale) / 2, (height * scale) / 2];
      const reach = Math.max(Math.hypot(...halfExtents), Math.hypot(...centre) + radius);
      this.camera.frame({ centre: [0, 0, 0], radius: reach, halfExtents });
    } else {
      this.camera.frame({ centre, radius });
    }
    this.redraw();
  }

  backdropQuad({ width, height, scale }, minZ) {
    const [x, y, z] = [(width * scale) / 2, (height * scale) / 2, minZ - 0.01]; // just behind the head
    return {
      positions: new Float32Array([-x, -y, z, x, -y, z, x, y, z, -x, y, z]),
      normals: new Float32Array([0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1]),
      uvs: new Float32Array([0, 1, 1, 1, 1, 0, 0, 0]),
      colours: new Float32Array(12).fill(1),
      triangles: new Uint32Array([0, 1, 2, 0, 2, 3]),
      edges: new Uint32Array(0),
    };
  }

  uploadMesh({ positions, normals, uvs, colours, triangles, edges }) {
    const gl = this.gl;
    const vao = gl.createVertexArray();
    gl.bindVertexArray(vao);
    const buffers = [positions, normals, uvs, colours].map((data, location) => {
      const buffer = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
      gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
      gl.enableVertexAttribArray(location);
      gl.vertexAttribPointer(location, location === 2 ? 2 : 3, gl.FLOAT, false, 0, 0);
      return buffer;
    });
    const elementBuffer = (indices) => {
      const buffer = gl.createBuffer();
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, buffer);
      gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, indices, gl.STATIC_DRAW);
      return { buffer, count: indices.length };
    };
    const lines = elementBuffer(edges);
    const mesh = { vao, buffers, lines, triangles: elementBuffer(triangles) }; // triangles stay bound
    gl.bindVertexArray(null);
    return mesh;
  }

  deleteMesh({ vao, buffers, lines, triangles }) {
    const gl = this.gl;
    gl.deleteVertexArray(vao);
    for (const buffer of [...buffers, lines.buffer, triangles.buffer]) gl.deleteBuffer(buffer);
  }

  redraw() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      this.draw();
    });
  }

  /** Draw `mesh` as triangles (`lines` false) or its edges; the triangle buffer is the VAO's own. */
  drawMesh(mesh, lines = false) {
    const gl = this.gl;
    gl.bindVertexArray(mesh.vao);
    if (lines) {
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, mesh.lines.buffer);
      gl.drawElements(gl.LINES, mesh.lines.count, gl.UNSIGNED_INT, 0);
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, mesh.triangles.buffer);
    } else {
      gl.drawElements(gl.TRIANGLES, mesh.triangles.count, gl.UNSIGNED_INT, 0);
    }
  }

  shade(shading, colour = SKIN_GREY, opacity = 1) {
    const gl = this.gl;
    gl.uniform1i(this.uniforms.uShading, shading);
    gl.uniform3fv(this.uniforms.uColour, colour);
    gl.uniform1f(this.uniforms.uOpacity, opacity);
  }

  /** Lay down the meshes' depth only, so what is drawn next shows just their nearest surface. */
  depthOnly() {
    const gl = this.gl;
    gl.colorMask(false, false, false, false);
    gl.enable(gl.POLYGON_OFFSET_FILL);
    gl.polygonOffset(1, 1); // a little behind, so the surface's own lines pass the depth test
    for (const mesh of this.meshes) this.drawMesh(mesh);
    gl.disable(gl.POLYGON_OFFSET_FILL);
    gl.colorMask(true, true, true, true);
  }

  draw() {
    const { gl, canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const [width, height] = [Math.round(canvas.clientWidth * ratio), Math.round(canvas.clientHeight * ratio)];
    if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
    gl.viewport(0, 0, width, height);
    gl.clearColor(...BACKGROUND, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (!this.meshes.length || !width || !height) return;

    gl.useProgram(this.program);
    const { view, projection } = this.camera.matrices(width / height);
    gl.uniformMatrix4fv(this.uniforms.uView, false, view);
    gl.uniformMatrix4fv(this.uniforms.uProjection, false, projection);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, this.photo);
    gl.uniform1i(this.uniforms.uPhoto, 0);
    gl.enable(gl.DEPTH_TEST);
    gl.depthFunc(gl.LEQUAL);

    const overlay = this.overlay && this.backdrop;
    if (overlay) {
      this.shade(FLAT_PHOTO);
      this.drawMesh(this.backdrop);
    }
    if (this.mode === "wireframe") {
      this.depthOnly();
      this.shade(FLAT_COLOUR, WIRE_COLOUR);
      for (const mesh of this.meshes) this.drawMesh(mesh, true);
      return;
    }
    const shading = { textured: LAMBERT_PHOTO, albedo: LAMBERT_VERTEX }[this.mode] ?? LAMBERT_COLOUR;
    if (overlay && this.mode === "shaded") {
      this.depthOnly();
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
      this.shade(shading, SKIN_GREY, OVERLAY_OPACITY);
      for (const mesh of this.meshes) this.drawMesh(mesh);
      gl.disable(gl.BLEND);
      return;
    }
    this.shade(shading);
    for (const mesh of this.meshes) this.drawMesh(mesh);
  }

  /** Nothing to show (e.g. after an error). */
  clear() {
    this.setScene([], null, null);
  }
}
