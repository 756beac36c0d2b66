# Custom SDK container for Dataflow workers: antspyx, TensorFlow and this
# project preinstalled, so workers start without pip-installing anything.
#
#   docker build -t europe-west4-docker.pkg.dev/MY_PROJECT/brats/beam-worker:0.1.0 .
#   docker push europe-west4-docker.pkg.dev/MY_PROJECT/brats/beam-worker:0.1.0
#   python -m beam_pipeline.preprocess ... --runner=DataflowRunner \
#       --sdk_container_image=europe-west4-docker.pkg.dev/MY_PROJECT/brats/beam-worker:0.1.0 \
#       --experiments=use_runner_v2
#
# The base image's Beam version and Python must match the launcher's (2.77.0, 3.11).
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/brats
COPY requirements.txt constraints.txt setup.py ./
RUN pip install --no-cache-dir -c constraints.txt -r requirements.txt "apache-beam[gcp]==2.77.0"
COPY shared ./shared
COPY preprocessing ./preprocessing
COPY beam_pipeline ./beam_pipeline
COPY trainer ./trainer
COPY serving ./serving
COPY synthetic ./synthetic
COPY configs ./configs
RUN pip install --no-cache-dir --no-deps .

# One ITK thread per N4: byte-reproducible output (preprocessing/n4.py sets it too, before antspyx loads).
ENV ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1
