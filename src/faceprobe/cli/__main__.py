from faceprobe.cli import main

main()
