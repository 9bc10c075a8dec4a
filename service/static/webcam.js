// The camera, where the browser allows it (getUserMedia needs https or localhost): a live
// preview, and one frame of it as a JPEG file.

const JPEG_QUALITY = 0.92;

export const webcamAvailable = () => Boolean(navigator.mediaDevices?.getUserMedia);

/** Starts the camera into `video`; resolves to a function that stops it. */
export async function startWebcam(video) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 } }, audio: false });
  video.srcObject = stream;
  await video.play();
  return () => {
    for (const track of stream.getTracks()) track.stop();
    video.srcObject = null;
  };
}

/** The frame `video` shows now, as a JPEG File. */
export async function captureFrame(video) {
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
  if (!blob) throw new Error("the frame could not be encoded as JPEG");
  return new File([blob], "camera.jpg", { type: "image/jpeg" });
}
