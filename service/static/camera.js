// An orbiting camera (column-major 4x4 matrices, as WebGL wants them) and its mouse/touch controls.

const FIELD_OF_VIEW = (30 * Math.PI) / 180; // vertical, perspective views
const MAX_PITCH = 1.5; // radians: just short of looking straight down or up
const RADIANS_PER_PIXEL = 0.01;

function multiply(a, b) {
  const out = new Float32Array(16);
  for (let col = 0; col < 4; col++) {
    for (let row = 0; row < 4; row++) {
      let sum = 0;
      for (let k = 0; k < 4; k++) sum += a[k * 4 + row] * b[col * 4 + k];
      out[col * 4 + row] = sum;
    }
  }
  return out;
}

function translation(x, y, z) {
  return new Float32Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, x, y, z, 1]);
}

function rotationX(angle) {
  const c = Math.cos(angle), s = Math.sin(angle);
  return new Float32Array([1, 0, 0, 0, 0, c, s, 0, 0, -s, c, 0, 0, 0, 0, 1]);
}

function rotationY(angle) {
  const c = Math.cos(angle), s = Math.sin(angle);
  return new Float32Array([c, 0, -s, 0, 0, 1, 0, 0, s, 0, c, 0, 0, 0, 0, 1]);
}

function perspective(fovY, aspect, near, far) {
  const f = 1 / Math.tan(fovY / 2);
  return new Float32Array([f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) / (near - far), -1,
    0, 0, (2 * far * near) / (near - far), 0]);
}

function orthographic(halfWidth, halfHeight, near, far) {
  return new Float32Array([1 / halfWidth, 0, 0, 0, 0, 1 / halfHeight, 0, 0, 0, 0, 2 / (near - far), 0,
    0, 0, (far + near) / (near - far), 1]);
}

/** Looks at `centre` from the front (+Z), turned by yaw and pitch, zoomed by `zoom`.
 *
 * Perspective views fit a sphere of `radius`; orthographic ones fit a rectangle of
 * `halfExtents` (e.g. the photo) and show it exactly as a photo would. */
export class OrbitCamera {
  constructor() {
    this.frame({ centre: [0, 0, 0], radius: 1 });
  }

  frame({ centre, radius, halfExtents = null }) {
    Object.assign(this, { centre, radius, halfExtents });
    this.reset();
  }

  reset() {
    this.yaw = 0;
    this.pitch = 0;
    this.zoom = 1;
  }

  rotate(dxPixels, dyPixels) {
    this.yaw += dxPixels * RADIANS_PER_PIXEL;
    this.pitch = Math.max(-MAX_PITCH, Math.min(MAX_PITCH, this.pitch + dyPixels * RADIANS_PER_PIXEL));
  }

  zoomBy(factor) {
    this.zoom = Math.max(0.2, Math.min(20, this.zoom * factor));
  }

  /** { view, projection } for a viewport of `aspect` = width / height. */
  matrices(aspect) {
    const r = this.radius;
    let distance, projection;
    if (this.halfExtents) {
      const [hx, hy] = this.halfExtents;
      const halfHeight = (Math.max(hy, hx / aspect) * 1.02) / this.zoom;
      distance = 3 * r;
      projection = orthographic(halfHeight * aspect, halfHeight, distance - 2 * r, distance + 2 * r);
    } else {
      const narrowest = Math.min(FIELD_OF_VIEW, 2 * Math.atan(Math.tan(FIELD_OF_VIEW / 2) * aspect));
      distance = (r * 1.1) / Math.sin(narrowest / 2) / this.zoom;
      projection = perspective(FIELD_OF_VIEW, aspect, Math.max(distance - 2 * r, distance / 100), distance + 2 * r);
    }
    const [cx, cy, cz] = this.centre;
    const view = multiply(translation(0, 0, -distance),
      multiply(rotationX(this.pitch), multiply(rotationY(this.yaw), translation(-cx, -cy, -cz))));
    return { view, projection };
  }
}

/** Drag to orbit, wheel or pinch to zoom, double-click to reset; `changed` is called after each. */
export function attachOrbitControls(canvas, camera, changed) {
  const pointers = new Map(); // pointerId -> last [x, y]
  const spread = () => {
    const [a, b] = [...pointers.values()];
    return Math.hypot(a[0] - b[0], a[1] - b[1]);
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    pointers.set(event.pointerId, [event.clientX, event.clientY]);
  });
  canvas.addEventListener("pointermove", (event) => {
    const last = pointers.get(event.pointerId);
    if (!last) return;
    if (pointers.size === 1) {
      camera.rotate(event.clientX - last[0], event.clientY - last[1]);
      pointers.set(event.pointerId, [event.clientX, event.clientY]);
    } else {
      const before = spread();
      pointers.set(event.pointerId, [event.clientX, event.clientY]);
      if (before > 0) camera.zoomBy(spread() / before);
    }
    changed();
  });
  const release = (event) => pointers.delete(event.pointerId);
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    camera.zoomBy(Math.exp(-event.deltaY * 0.001));
    changed();
  }, { passive: false });
  canvas.addEventListener("dblclick", () => {
    camera.reset();
    changed();
  });
}
