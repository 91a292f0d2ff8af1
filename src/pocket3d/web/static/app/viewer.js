// The 3D viewer: a model framed and upright (glTF is Y-up) on a neutral environment light with a ground shadow,
// orbit/zoom/pan by mouse, touch or keyboard, a wireframe toggle and the triangle count; parts of a segmented GLB
// (a node per part with extras.part_id) in their own colours, picked by click; the skeleton of a rigged one, with
// a joint that can be bent. It draws only when something changed.

import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { OBJLoader } from "three/addons/loaders/OBJLoader.js";
import { PLYLoader } from "three/addons/loaders/PLYLoader.js";
import { STLLoader } from "three/addons/loaders/STLLoader.js";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { RoomEnvironment } from "three/addons/environments/RoomEnvironment.js";

export const BACKGROUND = 0xe9ecf1;
const GREY = new THREE.MeshStandardMaterial({ color: 0x9ea4ae, roughness: 0.7, metalness: 0 });

/** A part's colour: hues a golden angle apart, so neighbours differ whatever their number. */
export function partColor(index) {
  return new THREE.Color().setHSL((index * 0.618034) % 1, 0.65, 0.52);
}

/** Whether WebGL runs on the CPU (SwiftShader, llvmpipe): then antialiasing and fine shadows cost more than they
 * give, and orbiting would stutter. */
function softwareRendering() {
  const gl = document.createElement("canvas").getContext("webgl2");
  const info = gl?.getExtension("WEBGL_debug_renderer_info");
  const name = info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : "";
  gl?.getExtension("WEBGL_lose_context")?.loseContext();
  return /swiftshader|llvmpipe|software/i.test(name);
}
const SOFTWARE = softwareRendering();

export class Viewer {
  constructor(canvas) {
    this.canvas = canvas;
    // preserveDrawingBuffer: the picture can be read back (a screenshot, the tests).
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: !SOFTWARE, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.renderer.toneMapping = THREE.NeutralToneMapping;
    this.renderer.shadowMap.enabled = true;
    this.renderer.shadowMap.type = THREE.PCFShadowMap;

    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(BACKGROUND);
    const pmrem = new THREE.PMREMGenerator(this.renderer);
    this.scene.environment = pmrem.fromScene(new RoomEnvironment(), 0.04).texture;
    this.scene.environmentIntensity = 0.9;
    pmrem.dispose();

    this.sun = new THREE.DirectionalLight(0xffffff, 1.2);
    this.sun.castShadow = true;
    this.sun.shadow.mapSize.setScalar(SOFTWARE ? 512 : 2048);
    this.sun.shadow.bias = -0.0005;
    this.scene.add(this.sun, this.sun.target);
    this.ground = new THREE.Mesh(new THREE.PlaneGeometry(1, 1), new THREE.ShadowMaterial({ opacity: 0.22 }));
    this.ground.rotation.x = -Math.PI / 2;
    this.ground.receiveShadow = true;
    this.scene.add(this.ground);

    this.camera = new THREE.PerspectiveCamera(40, 1, 0.01, 100);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.addEventListener("change", () => this.render());
    this.model = null;
    this.parts = [];
    this.bones = [];
    this.skeleton = null;
    this.onPick = null;
    this.wireframe = false;

    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(canvas.parentElement);
    canvas.addEventListener("keydown", (e) => this.key(e));
    this.pointerDown = null;
    canvas.addEventListener("pointerdown", (e) => { this.pointerDown = [e.clientX, e.clientY]; });
    canvas.addEventListener("pointerup", (e) => this.click(e));
    this.resize();
  }

  /** Show a model file: a Blob (or ArrayBuffer) of `format` (glb, gltf, obj, ply, stl). Answers what it holds. */
  async load(data, format = "glb") {
    const buffer = data instanceof Blob ? await data.arrayBuffer() : data;
    let object;
    if (format === "glb" || format === "gltf") {
      const gltf = await new GLTFLoader().parseAsync(buffer, "");
      object = gltf.scene;
    } else if (format === "obj") {
      object = new OBJLoader().parse(new TextDecoder().decode(buffer));
      object.traverse((o) => { if (o.isMesh) o.material = GREY; });
    } else if (format === "ply" || format === "stl") {
      const geometry = (format === "ply" ? new PLYLoader() : new STLLoader()).parse(buffer);
      geometry.computeVertexNormals();
      const material = geometry.hasAttribute("color")
        ? new THREE.MeshStandardMaterial({ vertexColors: true, roughness: 0.7 }) : GREY;
      object = new THREE.Mesh(geometry, material);
    } else {
      throw new Error(`the viewer shows glb, gltf, obj, ply and stl, not ${format}`);
    }
    this.show(object);
    return { triangles: this.triangles, parts: this.parts, bones: this.bones };
  }

  show(object) {
    if (this.model) this.scene.remove(this.model);
    if (this.skeleton) { this.scene.remove(this.skeleton); this.skeleton.dispose(); this.skeleton = null; }
    this.model = object;
    this.parts = [];
    this.bones = [];
    this.triangles = 0;
    object.traverse((o) => {
      if (o.isMesh) {
        o.castShadow = true;
        const g = o.geometry;
        this.triangles += (g.index ? g.index.count : g.attributes.position.count) / 3;
      }
      if (o.isBone) this.bones.push({ bone: o, rest: o.quaternion.clone() });
      if (o.userData && Number.isInteger(o.userData.part_id)) {
        this.parts.push({ id: o.userData.part_id, name: o.name || `part ${o.userData.part_id}`, object: o });
      }
    });
    this.parts.sort((a, b) => a.id - b.id);
    this.parts.forEach((part, i) => {
      part.color = partColor(i);
      part.material = new THREE.MeshStandardMaterial({ color: part.color, roughness: 0.6, metalness: 0 });
      part.object.traverse((o) => { if (o.isMesh) { o.material = part.material; o.userData.partId = part.id; } });
    });
    this.scene.add(object);
    if (this.bones.length) {
      this.skeleton = new THREE.SkeletonHelper(object);
      this.skeleton.material.linewidth = 2;
      this.scene.add(this.skeleton);
    }
    this.setWireframe(this.wireframe);
    this.frame();
  }

  /** Turn the model by a 3x3 matrix (rows), as the server turned a job's input (job.orientation), and frame it. */
  turn(rows) {
    const [a, b, c] = rows;
    const m = new THREE.Matrix4().set(a[0], a[1], a[2], 0, b[0], b[1], b[2], 0, c[0], c[1], c[2], 0, 0, 0, 0, 1);
    this.model.position.set(0, 0, 0);
    this.model.applyMatrix4(m);
    this.model.updateMatrixWorld(true);
    this.frame();
  }

  /** Stand the model on the ground, centred, and put the camera where it fills the view. */
  frame() {
    const box = new THREE.Box3().setFromObject(this.model);
    if (box.isEmpty()) return;
    const center = box.getCenter(new THREE.Vector3());
    this.model.position.x -= center.x;
    this.model.position.z -= center.z;
    this.model.position.y -= box.min.y;
    this.model.updateMatrixWorld(true);
    const size = box.getSize(new THREE.Vector3());
    const radius = Math.max(size.length() / 2, 1e-3);
    const target = new THREE.Vector3(0, size.y / 2, 0);
    const distance = radius / Math.sin(THREE.MathUtils.degToRad(this.camera.fov / 2)) * 1.05;
    this.camera.near = distance / 100;
    this.camera.far = distance * 100;
    this.camera.updateProjectionMatrix();
    // Three-quarter view from the front (+Z), a little above.
    const direction = new THREE.Vector3(0.55, 0.4, 1).normalize();
    this.camera.position.copy(target).addScaledVector(direction, distance);
    this.controls.target.copy(target);
    this.controls.minDistance = distance / 20;
    this.controls.maxDistance = distance * 10;
    this.home = { position: this.camera.position.clone(), target: target.clone() };

    this.ground.scale.setScalar(radius * 8);
    this.sun.position.set(radius * 1.5, radius * 4, radius * 2);
    this.sun.target.position.copy(target);
    const shadow = this.sun.shadow.camera;
    shadow.left = shadow.bottom = -radius * 1.5;
    shadow.right = shadow.top = radius * 1.5;
    shadow.near = radius * 0.5;
    shadow.far = radius * 10;
    shadow.updateProjectionMatrix();
    this.controls.update();
    this.render();
  }

  reset() {
    if (!this.home) return;
    this.camera.position.copy(this.home.position);
    this.controls.target.copy(this.home.target);
    this.controls.update();
  }

  setWireframe(on) {
    this.wireframe = on;
    this.model?.traverse((o) => {
      if (!o.isMesh) return;
      for (const m of Array.isArray(o.material) ? o.material : [o.material]) m.wireframe = on;
    });
    this.render();
  }

  setSkeletonVisible(on) {
    if (this.skeleton) this.skeleton.visible = on;
    this.render();
  }

  /** Turn joint `index` by `degrees` about its own Z axis (the bend axis of a limb along its bone). */
  bend(index, degrees, axis = "z") {
    const joint = this.bones[index];
    if (!joint) return;
    const turn = new THREE.Quaternion().setFromAxisAngle(
      new THREE.Vector3(axis === "x" ? 1 : 0, axis === "y" ? 1 : 0, axis === "z" ? 1 : 0),
      THREE.MathUtils.degToRad(degrees));
    joint.bone.quaternion.copy(joint.rest).multiply(turn);
    this.render();
  }

  /** Highlight a part (null: none): the others fade. */
  highlight(id) {
    this.highlighted = id;
    for (const part of this.parts) {
      const on = id === null || part.id === id;
      part.material.color.copy(part.color);
      if (!on) part.material.color.lerp(new THREE.Color(BACKGROUND), 0.75);
      part.material.emissive.set(id !== null && part.id === id ? part.color : 0x000000);
      part.material.emissiveIntensity = 0.25;
    }
    this.render();
  }

  click(e) {
    if (!this.pointerDown || !this.parts.length || !this.onPick) return;
    const moved = Math.hypot(e.clientX - this.pointerDown[0], e.clientY - this.pointerDown[1]);
    this.pointerDown = null;
    if (moved > 4) return;  // a drag orbits; only a click picks
    const rect = this.canvas.getBoundingClientRect();
    const pointer = new THREE.Vector2((e.clientX - rect.left) / rect.width * 2 - 1,
      -(e.clientY - rect.top) / rect.height * 2 + 1);
    const ray = new THREE.Raycaster();
    ray.setFromCamera(pointer, this.camera);
    const hit = ray.intersectObject(this.model, true).find((i) => i.object.userData.partId !== undefined);
    this.onPick(hit ? hit.object.userData.partId : null);
  }

  /** Arrow keys orbit, +/- zoom, 0 goes back to the first view. */
  key(e) {
    const step = THREE.MathUtils.degToRad(10);
    const offset = this.camera.position.clone().sub(this.controls.target);
    const spherical = new THREE.Spherical().setFromVector3(offset);
    if (e.key === "ArrowLeft") spherical.theta -= step;
    else if (e.key === "ArrowRight") spherical.theta += step;
    else if (e.key === "ArrowUp") spherical.phi = Math.max(0.05, spherical.phi - step);
    else if (e.key === "ArrowDown") spherical.phi = Math.min(Math.PI - 0.05, spherical.phi + step);
    else if (e.key === "+" || e.key === "=") spherical.radius *= 0.85;
    else if (e.key === "-") spherical.radius /= 0.85;
    else if (e.key === "0") { this.reset(); e.preventDefault(); return; }
    else return;
    e.preventDefault();
    this.camera.position.copy(this.controls.target).add(new THREE.Vector3().setFromSpherical(spherical));
    this.controls.update();
  }

  resize() {
    const parent = this.canvas.parentElement;
    const width = Math.max(1, parent.clientWidth);
    const height = Math.max(1, parent.clientHeight);
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.render();
  }

  render() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = null;
      this.renderer.render(this.scene, this.camera);
      this.canvas.dataset.frames = String(Number(this.canvas.dataset.frames || 0) + 1);
    });
  }

  dispose() {
    this.resizer.disconnect();
    this.controls.dispose();
    if (this.pending) cancelAnimationFrame(this.pending);
    this.renderer.dispose();
    this.renderer.forceContextLoss();
  }
}
